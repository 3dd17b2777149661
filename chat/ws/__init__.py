"""The WebSocket door (`/ws/chat`): the socket unit, the protocol router and its handlers."""
