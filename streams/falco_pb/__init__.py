"""Stubs for Falco's gRPC outputs and version APIs, generated from streams/falco_proto.

Do not edit the *_pb2* files by hand: change the .proto files and run
`python -m streams.falco_pb.generate` (CI runs it with `--check`).
"""
