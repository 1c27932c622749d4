"""The API's own description: OpenAPI 3.1 for HTTP (built from the views' declarations) and
AsyncAPI 3.0 for the WebSockets, both over one set of JSON Schemas (`schemas.py`)."""
