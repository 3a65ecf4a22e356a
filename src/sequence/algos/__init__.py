"""WASM algos: the ABI, the Wasmtime host, and the manager that runs deployments in the market process."""
