"""Small ASGI apps that the responsiveness benchmark serves with uvicorn, one per subprocess."""
