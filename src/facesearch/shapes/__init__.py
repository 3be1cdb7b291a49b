"""The one shape layer: every JSON shape facesearch shows the world, by the native HTTP API
(``/v1``), by the CLI's ``--json`` (the same shapes) and, as Amazon Rekognition's PascalCase
dicts, by its endpoint (:mod:`.rekognition`).

One module per concept: :mod:`.base` (the base model, rounding, public messages),
:mod:`.faces`, :mod:`.search` (searches, comparisons, what a threshold means),
:mod:`.collections`, :mod:`.users`, :mod:`.keys`, :mod:`.accountability` (policy, erasure
receipts, reviews, the audit trail), :mod:`.video`, :mod:`.streams`, :mod:`.rekognition`.

Shapes are built from the service's own objects with pydantic's ``from_attributes``
(``FaceOut.model_validate(face_record)``); a shape that gathers several objects has an ``of``
class method. Native shapes are pixels (boxes ``[x1, y1, x2, y2]``, five ``[x, y]``
landmarks), scores 0-1, similarities and thresholds 0-100.
"""
