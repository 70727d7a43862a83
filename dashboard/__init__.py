"""The live training dashboard: WebSocket consumers, routing and the page. Builds on ``training``."""
