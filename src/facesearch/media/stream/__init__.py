"""Live stream processors: watch a camera for the faces of a watchlist collection.

- :mod:`~facesearch.media.stream.model`: a processor's settings, status, metrics, live view;
- :mod:`~facesearch.media.stream.capture`: the capture thread (decode, newest frame, cuts,
  reconnection);
- :mod:`~facesearch.media.stream.processor`: one running processor (track, embed, search,
  events and their outputs);
- :mod:`~facesearch.media.stream.registry`: ``StreamProcessors``, the stored processors
  and those running in this process (``fs.streams``).
"""
