"""The HTTP surface: the raw-ASGI /inbox endpoint, its parsers and responses, middleware.

Domain errors become HTTP statuses in one place (`responses.ERROR_STATUS`).
"""
