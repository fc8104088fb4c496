"""The request-body decoder: gzip and deflate (both ways), caps, bombs, corrupt and unknown
codings — pure, no sockets."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.body import STEP, Decoder, codings, decoder_for, encoding_label
from sidecar.errors import BodyTooLarge, InvalidRequest, UnsupportedEncoding

TEXT = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}' * 50
LIMIT = 1024 * 1024


def decode(coding: str, data: bytes, limit: int = LIMIT, split: int | None = None) -> bytes:
    """Feed *data* whole, or in pieces of *split* bytes; the decoded body."""
    decoder = Decoder(coding, limit)
    step = split or max(1, len(data))
    pieces = [
        piece for at in range(0, len(data), step) for piece in decoder.feed(data[at : at + step])
    ]
    decoder.finish()
    return b"".join(pieces)


def heads(*values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(("Content-Encoding", value) for value in values))


# -- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1, 7, 4096])
def test_gzip_whole_or_in_pieces(split: int | None) -> None:
    assert decode("gzip", gzip.compress(TEXT), split=split) == TEXT


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib-wrapped", "raw"])
@pytest.mark.parametrize("split", [None, 1, 3])
def test_deflate_zlib_wrapped_and_raw(wbits: int, split: int | None) -> None:
    """RFC 9110 deflate is zlib-wrapped; some clients send raw deflate. Both are decoded,
    the wrapper told from the first two bytes even when they come one at a time."""
    compressor = zlib.compressobj(wbits=wbits)
    data = compressor.compress(TEXT) + compressor.flush()
    assert decode("deflate", data, split=split) == TEXT


def test_concatenated_gzip_members_are_decoded_one_after_the_other() -> None:
    assert decode("gzip", gzip.compress(b"abc") + gzip.compress(b"def")) == b"abcdef"


def test_pieces_are_at_most_one_step() -> None:
    decoder = Decoder("gzip", 10 * STEP)
    pieces = list(decoder.feed(gzip.compress(bytes(5 * STEP))))
    assert len(pieces) == 5
    assert all(len(piece) == STEP for piece in pieces)
    decoder.finish()


def test_exact_limit_is_allowed_one_more_byte_is_not() -> None:
    assert decode("gzip", gzip.compress(bytes(1000)), limit=1000) == bytes(1000)
    with pytest.raises(BodyTooLarge):
        decode("gzip", gzip.compress(bytes(1001)), limit=1000)


# -- bombs -------------------------------------------------------------------------------------


def test_bomb_is_cut_off_at_the_limit_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(10 * 1024 * 1024))  # 10 MiB of zeros in ~10 KB
    decoder = Decoder("gzip", 64 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge, match="65536"):
            for _ in decoder.feed(bomb):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.size == 64 * 1024 + 1  # never more than limit + 1 bytes were produced
    assert peak < 1024 * 1024  # far from the 10 MiB the bomb holds


def test_a_gibibyte_of_members_is_cut_off_too() -> None:
    member = gzip.compress(bytes(10 * 1024 * 1024))
    decoder = Decoder("gzip", LIMIT)
    with pytest.raises(BodyTooLarge):
        for _ in decoder.feed(member * 100):
            pass
    assert decoder.size == LIMIT + 1


def test_deflate_bomb_is_cut_off() -> None:
    with pytest.raises(BodyTooLarge):
        decode("deflate", zlib.compress(bytes(10 * 1024 * 1024)), limit=4096)


# -- corrupt and short -------------------------------------------------------------------------


def test_not_gzip_at_all_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="not valid gzip"):
        decode("gzip", TEXT)


def test_corrupt_gzip_is_a_400() -> None:
    data = bytearray(gzip.compress(TEXT))
    data[12:20] = b"\xff" * 8
    with pytest.raises(InvalidRequest):
        decode("gzip", bytes(data))


def test_bad_checksum_is_a_400() -> None:
    data = bytearray(gzip.compress(TEXT))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    with pytest.raises(InvalidRequest):
        decode("gzip", bytes(data))


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_truncated_data_is_a_400_at_the_end(coding: str) -> None:
    data = gzip.compress(TEXT) if coding == "gzip" else zlib.compress(TEXT)
    with pytest.raises(InvalidRequest, match="ends inside"):
        decode(coding, data[: len(data) // 2])


def test_a_lone_deflate_byte_is_a_400_at_the_end() -> None:
    with pytest.raises(InvalidRequest, match="ends inside"):
        decode("deflate", b"\x78")


def test_trailing_garbage_after_a_member_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        decode("gzip", gzip.compress(TEXT) + b"garbage!")


def test_no_bytes_at_all_is_an_empty_body() -> None:
    assert decode("gzip", b"") == b""


# -- which codings -----------------------------------------------------------------------------


def test_codings_are_read_in_order_across_fields_without_identity() -> None:
    assert codings(heads("GZip")) == ("gzip",)
    assert codings(heads("identity")) == ()
    assert codings(heads("gzip, identity", "deflate")) == ("gzip", "deflate")
    assert codings(heads(" , ")) == ()


@pytest.mark.parametrize(("tokens", "coding"), [(("gzip",), "gzip"), (("x-gzip",), "gzip")])
def test_decoder_for_known_codings(tokens: tuple[str, ...], coding: str) -> None:
    decoder = decoder_for(tokens, LIMIT)
    assert decoder is not None
    assert b"".join(decoder.feed(gzip.compress(b"x"))) == b"x"


def test_identity_needs_no_decoder() -> None:
    assert decoder_for((), LIMIT) is None


@pytest.mark.parametrize("token", ["br", "zstd", "compress", "x-foo"])
def test_unknown_codings_are_a_415_naming_the_accepted_ones(token: str) -> None:
    with pytest.raises(UnsupportedEncoding, match=token) as caught:
        decoder_for((token,), LIMIT)
    assert caught.value.status == 415
    assert caught.value.headers == (("Accept-Encoding", "gzip, deflate, identity"),)


def test_stacked_codings_are_a_415() -> None:
    with pytest.raises(UnsupportedEncoding, match="stacked"):
        decoder_for(("gzip", "gzip"), LIMIT)


def test_a_long_or_unprintable_token_is_not_echoed_whole() -> None:
    with pytest.raises(UnsupportedEncoding) as caught:
        decoder_for(("x" * 5000,), LIMIT)
    assert len(caught.value.message) < 200
    with pytest.raises(UnsupportedEncoding) as caught:
        decoder_for(("a\x00b",), LIMIT)
    assert "\x00" not in caught.value.message


def test_encoding_labels_are_a_fixed_set() -> None:
    assert encoding_label(()) == "identity"
    assert encoding_label(("x-gzip",)) == "gzip"
    assert encoding_label(("br",)) == "br"
    assert encoding_label(("x-" + "a" * 100,)) == "other"
    assert encoding_label(("gzip", "gzip")) == "stacked"
