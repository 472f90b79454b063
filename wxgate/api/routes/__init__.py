"""One module per resource of the HTTP API; `create_app` mounts them."""
