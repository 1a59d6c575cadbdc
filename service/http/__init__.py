"""The HTTP side: routes, request schemas, intake (request -> job), uploads, errors, middleware; no torch."""
