from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class request(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class response(_message.Message):
    __slots__ = ("version", "major", "minor", "patch", "prerelease", "build", "engine_version", "engine_fields_checksum")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    PRERELEASE_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELDS_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    version: str
    major: int
    minor: int
    patch: int
    prerelease: str
    build: str
    engine_version: int
    engine_fields_checksum: str
    def __init__(self, version: _Optional[str] = ..., major: _Optional[int] = ..., minor: _Optional[int] = ..., patch: _Optional[int] = ..., prerelease: _Optional[str] = ..., build: _Optional[str] = ..., engine_version: _Optional[int] = ..., engine_fields_checksum: _Optional[str] = ...) -> None: ...
