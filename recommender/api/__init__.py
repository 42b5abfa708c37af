"""The REST API: a thin FastAPI shell over the library (``create_app``), configured by :class:`ApiSettings`."""
