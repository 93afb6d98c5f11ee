"""Protobuf definitions: ``taskmessage.proto`` and the code protoc generates from it.

``taskmessage_pb2.py``/``.pyi`` are generated — never edit them by hand; regenerate with the
command at the top of ``taskmessage.proto`` (``tests/test_codec.py`` checks they are current).
"""
