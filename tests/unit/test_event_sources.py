"""The local stack's stand-in for Lambda's DynamoDB-stream event source mapping."""

from __future__ import annotations

from typing import Any

from mastering.devstack.event_sources import StreamSource

FIRST = 1_100_000_000_017_454_423_009


class MotoLikeStream:
    """A stream numbered as moto numbers it (by the stream's length when a record is
    added), so two writes at once can share a number; its iterators behave as moto's."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._iterators: dict[str, int] = {}

    def add(self, job_id: str, old: str, new: str, *, number: int | None = None) -> None:
        sequence = FIRST + len(self.records) if number is None else number
        self.records.append(
            {
                "eventID": f"e{len(self.records)}",
                "eventName": "MODIFY",
                "dynamodb": {
                    "SequenceNumber": str(sequence),
                    "ApproximateCreationDateTime": 1_796_000_000,
                    "OldImage": {"job_id": {"S": job_id}, "status": {"S": old}},
                    "NewImage": {"job_id": {"S": job_id}, "status": {"S": new}},
                },
            }
        )

    def describe_stream(self, StreamArn: str) -> dict[str, Any]:
        return {
            "StreamDescription": {
                "Shards": [
                    {
                        "ShardId": "shard-1",
                        "SequenceNumberRange": {"StartingSequenceNumber": str(FIRST)},
                    }
                ]
            }
        }

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, str]:
        kind = kwargs["ShardIteratorType"]
        if kind == "TRIM_HORIZON":
            position = FIRST
        elif kind == "AT_SEQUENCE_NUMBER":
            position = int(kwargs["SequenceNumber"])
        else:
            position = int(kwargs["SequenceNumber"]) + 1
        token = f"it-{len(self._iterators)}"
        self._iterators[token] = position
        return {"ShardIterator": token}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        position = self._iterators[ShardIterator]
        records = self.records[position - FIRST : position - FIRST + Limit]
        if records:
            after = max(int(r["dynamodb"]["SequenceNumber"]) for r in records)
            next_token = self.get_shard_iterator(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=str(after)
            )
        else:
            next_token = self.get_shard_iterator(
                ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=str(position)
            )
        return {"Records": records, "NextShardIterator": next_token["ShardIterator"]}


def test_records_sharing_a_number_are_each_handed_over_once() -> None:
    # Given a stream where two writes at once got the same number (moto under load)
    stream = MotoLikeStream()
    stream.add("a", "processing", "processing")
    stream.add("b", "processing", "processing", number=FIRST)  # the race
    stream.add("c", "processing", "cancelled", number=FIRST + 1)
    handed: list[str] = []
    source = StreamSource(
        streams=stream,
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
        invoke=lambda event: (
            handed.extend(r["dynamodb"]["NewImage"]["job_id"]["S"] for r in event["Records"])
            or {"batchItemFailures": []}
        ),
        pattern={"eventName": ["MODIFY"]},
        on_failure=lambda record: None,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:job-events",
    )
    # When it is polled until nothing is left, with records arriving between polls
    for _ in range(3):
        source.poll()
    stream.add("d", "processing", "succeeded")
    for _ in range(3):
        source.poll()
    # Then every record was handed over exactly once (the cancel too: one webhook)
    assert handed == ["a", "b", "c", "d"]
