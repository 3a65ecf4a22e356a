"""The SDK version, kept equal to the platform's (a test checks it).

Hard-coded rather than read from ``sequence``: the SDK is vendored alone into
every strategy artifact, where the platform package does not exist.
"""

__version__ = "0.4.0"
