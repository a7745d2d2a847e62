"""The read buffer under paho's socket: same bytes, fewer system calls, buffered bytes reported as pending."""

from __future__ import annotations

import socket

import pytest

from facepipe.mqtt import ReadBufferedSocket


def test_small_reads_are_served_from_one_receive_in_order() -> None:
    left, right = socket.socketpair()
    with left, right:
        wrapped = ReadBufferedSocket(left)
        right.sendall(b"\x30\x05hello\x40\x02\x00\x01")
        assert wrapped.recv(1) == b"\x30"
        assert wrapped.pending() == 10
        assert wrapped.recv(1) == b"\x05"
        assert wrapped.recv(5) == b"hello"
        assert wrapped.recv(1) == b"\x40"
        assert wrapped.recv(100) == b"\x02\x00\x01"  # never more than is buffered, never a second receive
        assert wrapped.pending() == 0
        left.setblocking(False)
        with pytest.raises(BlockingIOError):  # as paho expects from an empty non-blocking socket
            wrapped.recv(1)
        right.sendall(b"large" * 1000)
        assert wrapped.recv(10_000) == b"large" * 1000  # a read larger than what arrived returns what arrived
        right.close()
        assert wrapped.recv(1) == b"", "end of stream reaches paho"


def test_everything_else_is_the_wrapped_socket() -> None:
    left, right = socket.socketpair()
    with left, right:
        wrapped = ReadBufferedSocket(left)
        assert wrapped.fileno() == left.fileno()
        assert wrapped.send(b"ping") == 4
        assert right.recv(4) == b"ping"
