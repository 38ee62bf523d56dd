import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from streams.falco_pb import schema_pb2 as _schema_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class request(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class response(_message.Message):
    __slots__ = ("time", "priority", "source_deprecated", "rule", "output", "output_fields", "hostname", "tags", "source")
    class OutputFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DEPRECATED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    priority: _schema_pb2.priority
    source_deprecated: _schema_pb2.source
    rule: str
    output: str
    output_fields: _containers.ScalarMap[str, str]
    hostname: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    source: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[_Union[_schema_pb2.priority, str]] = ..., source_deprecated: _Optional[_Union[_schema_pb2.source, str]] = ..., rule: _Optional[str] = ..., output: _Optional[str] = ..., output_fields: _Optional[_Mapping[str, str]] = ..., hostname: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ...) -> None: ...
