"""The web page and JSON API: a thin FastAPI layer over `digitrec.recognize` and the LiteRT runtime.

`create_app(ServerSettings(...))` builds the app; `digitrec serve` runs it under uvicorn.
"""
