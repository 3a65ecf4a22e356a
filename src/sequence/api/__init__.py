"""The coordinator: one ASGI app serving /v1/* (REST and WebSocket)."""
