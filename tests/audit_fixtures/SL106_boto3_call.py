# ruff: noqa
"""SL106 boto3-call: creating boto3 clients and resources, and their API calls."""

import boto3

from steadyloop import run_blocking

s3 = boto3.client("s3")
resource = boto3.resource("s3")


class Store:
    def __init__(self) -> None:
        self.bucket = boto3.resource("s3").Bucket("media")

    async def upload(self, path: str, key: str) -> None:
        self.bucket.upload_file(path, key)  # expect: SL106


async def positives(key: str) -> None:
    s3.get_object(Bucket="media", Key=key)  # expect: SL106
    client = boto3.client("dynamodb")  # expect: SL106
    client.put_item(TableName="t", Item={})  # expect: SL106
    session = boto3.Session()
    session.client("sqs").send_message(QueueUrl="q", MessageBody="m")  # expect: SL106
    resource.Object("media", key).get()  # expect: SL106


async def negatives(key: str) -> None:
    s3.generate_presigned_url("get_object", Params={"Key": key})  # ok: signed locally
    s3.get_paginator("list_objects_v2")  # ok: no I/O until iterated
    resource.Bucket("media")  # ok: a sub-resource does no I/O
    await run_blocking("aws", s3.get_object, Bucket="media", Key=key)  # ok: offloaded
