"""The HTTP API: a native REST API (``/v1``) and an Amazon Rekognition-compatible endpoint.

Build the app with :func:`facesearch.api.app.create_app`; run it with ``facesearch serve``.
Nothing here holds business logic: routes translate HTTP to calls of the same service objects
the CLI uses (:class:`facesearch.service.FaceSearch`).
"""
