"""Every operation of the Rekognition endpoint, called with a real boto3 client against a real
server, and every answer walked against botocore's service model (:mod:`.shapes`): a member
the model lacks, a wrong type, a missing required member, a value outside a stated pattern,
enum or range fails here. The tour must reach every operation the endpoint implements, so a
new operation without a shape check fails too."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from facesearch.api.rekognition import HANDLERS

from ..media.video_helpers import wait_for
from .conftest import S3_BUCKET, TINY_VIDEO_KEY, Server, image_bytes, kinesis_stream, make_video
from .shapes import WALKED

COLL = "shape-tour"


def img(name: str) -> dict[str, bytes]:
    return {"Bytes": image_bytes(name)}


def test_every_operation_answers_in_its_shape(server: Server, s3_url: str,
                                              tmp_path: Path) -> None:
    before = Counter(WALKED)
    admin, indexer = server.rekognition("admin"), server.rekognition("indexer")
    rek, auditor = server.rekognition("searcher"), server.rekognition("auditor")

    coll_arn = admin.create_collection(CollectionId=COLL, Tags={"tour": "yes"})["CollectionArn"]
    admin.list_collections(MaxResults=1)
    two = indexer.index_faces(CollectionId=COLL, Image=img("two_people.jpg"), MaxFaces=1,
                              QualityFilter="NONE", ExternalImageId="two")
    obama = indexer.index_faces(CollectionId=COLL, Image=img("obama.jpg"),
                                ExternalImageId="obama")["FaceRecords"][0]["Face"]["FaceId"]
    biden = indexer.index_faces(CollectionId=COLL, Image=img("biden.jpg"),
                                ExternalImageId="biden")["FaceRecords"][0]["Face"]["FaceId"]
    assert two["UnindexedFaces"]
    auditor.describe_collection(CollectionId=COLL)
    indexer.list_faces(CollectionId=COLL, MaxResults=2)
    rek.search_faces(CollectionId=COLL, FaceId=obama, FaceMatchThreshold=0)
    rek.search_faces_by_image(CollectionId=COLL, Image=img("obama2.jpg"), FaceMatchThreshold=0)
    rek.compare_faces(SourceImage=img("obama.jpg"), TargetImage=img("two_people.jpg"))
    rek.detect_faces(Image=img("two_people.jpg"), Attributes=["ALL"])

    indexer.create_user(CollectionId=COLL, UserId="barack")
    indexer.create_user(CollectionId=COLL, UserId="joe")
    indexer.list_users(CollectionId=COLL, MaxResults=1)
    indexer.associate_faces(CollectionId=COLL, UserId="barack", FaceIds=[obama])
    indexer.associate_faces(CollectionId=COLL, UserId="joe", FaceIds=[biden, str(uuid.uuid4())])
    rek.search_users(CollectionId=COLL, FaceId=obama, UserMatchThreshold=0)
    rek.search_users(CollectionId=COLL, UserId="joe", UserMatchThreshold=0)
    rek.search_users_by_image(CollectionId=COLL, Image=img("two_people.jpg"))
    indexer.disassociate_faces(CollectionId=COLL, UserId="joe", FaceIds=[biden, obama])
    indexer.delete_user(CollectionId=COLL, UserId="joe")
    indexer.delete_faces(CollectionId=COLL, FaceIds=[obama, str(uuid.uuid4())])

    video = {"S3Object": {"Bucket": S3_BUCKET, "Name": TINY_VIDEO_KEY}}
    search = rek.start_face_search(Video=video, CollectionId=COLL, JobTag="tour")["JobId"]
    detect = rek.start_face_detection(Video=video)["JobId"]
    for get, job in ((rek.get_face_search, search), (rek.get_face_detection, detect)):
        done = wait_for(lambda get=get, job=job: (o := get(JobId=job))["JobStatus"] !=
                        "IN_PROGRESS" and o, 300, f"video job {job}", every_s=1)
        assert done["JobStatus"] == "SUCCEEDED", done

    server.cli("cameras", "add", "tour-cam", str(make_video(tmp_path / "cam.mp4", frames=20)))
    out_arn = kinesis_stream(s3_url, "tour-out")
    spec: dict[str, Any] = {
        "Input": {"KinesisVideoStream": {
            "Arn": "arn:aws:kinesisvideo:us-east-1:123456789012:stream/tour-cam/1"}},
        "Output": {"KinesisDataStream": {"Arn": out_arn}}, "Name": "tour",
        "Settings": {"FaceSearch": {"CollectionId": COLL}},
        "RoleArn": "arn:aws:iam::123456789012:role/tour"}
    sp_arn = rek.create_stream_processor(**spec)["StreamProcessorArn"]
    rek.start_stream_processor(Name="tour")
    rek.describe_stream_processor(Name="tour")
    rek.list_stream_processors(MaxResults=1)
    rek.update_stream_processor(Name="tour", DataSharingPreferenceForUpdate={"OptIn": False})
    for arn in (coll_arn, sp_arn):
        admin.tag_resource(ResourceArn=arn, Tags={"owner": "tour"})
        auditor.list_tags_for_resource(ResourceArn=arn)
        admin.untag_resource(ResourceArn=arn, TagKeys=["owner"])
    rek.stop_stream_processor(Name="tour")
    rek.describe_stream_processor(Name="tour")
    rek.delete_stream_processor(Name="tour")
    admin.delete_collection(CollectionId=COLL)

    walked = WALKED - before
    missing = sorted(op.value for op in HANDLERS if not walked[op.value])
    assert not missing, f"operations never walked: {missing}"
