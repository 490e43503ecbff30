"""What an uploaded file really is, judged by its first bytes.

The declared content type and file name are the client's word; these bytes decide
which decoder (and which ffmpeg demuxer) may touch the file. Anything not recognised,
notably HLS playlists and other text that ffmpeg would happily follow, is refused
before any decoder opens it.

Hand-written rather than a magic-number library (python-magic, puremagic): those name
a file type, while this service needs the demuxer to pin, where the audio starts after
ID3 tags, and whether a WAV's data fits in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from mastering.formats import InputKind

_HEAD_BYTES = 64
# Nested or repeated ID3v2 tags are legal; a few are plenty before giving up.
_MAX_ID3_TAGS = 4
# Some taggers leave zero bytes between the tag and the first frame, outside the
# tag's declared size; more than this is not padding.
_MAX_PADDING = 64 * 1024

# Bitrate index 0 ("free format") and 15 (invalid) are refused, as is sample-rate index 3.
_MPEG_BITRATE_FREE = 0
_MPEG_BITRATE_BAD = 15
_MPEG_SAMPLERATE_BAD = 3
_MPEG_VERSION_RESERVED = 1
_MPEG_VERSION_1 = 3
_MPEG_LAYER_III = 1
# Layer III bitrates in kb/s by index: MPEG-1, and MPEG-2/2.5.
_LAYER3_KBPS = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Sample rates by version bits (0: MPEG-2.5, 2: MPEG-2, 3: MPEG-1) and index.
_MPEG_RATES = {
    0: (11_025, 12_000, 8_000),
    2: (22_050, 24_000, 16_000),
    3: (44_100, 48_000, 32_000),
}
# ADTS sampling-frequency indices 13-15 are reserved.
_ADTS_MAX_FREQ_INDEX = 12


@dataclass(frozen=True)
class Sniffed:
    kind: InputKind
    # Where the container or the first frame starts: past any ID3v2 tags and padding.
    offset: int


def sniff(path: Path) -> Sniffed | None:
    """The kind of audio in ``path`` and where it starts, or None if not audio we take."""
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
        kind = _container_kind(head) or _frame_kind(head, handle, 0)
        if kind is not None:
            return Sniffed(kind, 0)
        if not head.startswith(b"ID3"):
            return None
        # Some encoders tag FLAC, WAV and ADTS with ID3 too: what follows the tags
        # decides, and it must be audio. A tag followed by anything else (a Sun AU
        # file, text) is not an MP3 however well-formed the tag.
        offset = 0
        for _ in range(_MAX_ID3_TAGS):
            tag_size = _id3_size(head)
            if tag_size is None:
                return None
            offset = _skip_padding(handle, offset + tag_size)
            handle.seek(offset)
            head = handle.read(_HEAD_BYTES)
            if not head.startswith(b"ID3"):
                kind = _container_kind(head) or _frame_kind(head, handle, offset)
                return Sniffed(kind, offset) if kind is not None else None
        return None


def sniff_kind(path: Path) -> InputKind | None:
    """The kind of audio container in ``path`` by its magic bytes, or None if not audio we take."""
    sniffed = sniff(path)
    return sniffed.kind if sniffed is not None else None


def _skip_padding(handle: BinaryIO, offset: int) -> int:
    """The first offset at or after ``offset`` that is not a zero byte (within reason)."""
    handle.seek(offset)
    limit = offset + _MAX_PADDING
    while offset < limit:
        block = handle.read(min(4096, limit - offset))
        if not block:
            return offset
        stripped = block.lstrip(b"\x00")
        if stripped:
            return offset + len(block) - len(stripped)
        offset += len(block)
    return offset


# RIFF/FORM/chunk size fields that mean "unknown" (streamed writers, RF64's placeholder).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
# Chunks walked before the audio at most: real files have a handful.
_MAX_CHUNKS = 256


def is_truncated(path: Path, offset: int = 0) -> bool:
    """Whether a WAV or AIFF file starting at ``offset`` (past any ID3 tag) holds less
    audio than its header promises: its data chunk claims more bytes than the file has,
    or the file ends before the data chunk.

    libsndfile quietly decodes the part that is present, so an interrupted upload
    would be mastered as a shorter track; the user would rather be told.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(offset)
        head = handle.read(12)
        if len(head) < 12:
            return True
        order: Literal["little", "big"]
        if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
            order, audio_chunk = "little", b"data"
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            order, audio_chunk = "big", b"SSND"
        else:
            return False
        position = offset + 12
        long_data_size: int | None = None
        for _ in range(_MAX_CHUNKS):
            handle.seek(position)
            header = handle.read(8)
            if len(header) < 8:
                return True
            chunk, chunk_size = header[:4], int.from_bytes(header[4:8], order)
            if chunk == b"ds64":
                # RF64: the real sizes are 64-bit fields here; the data chunk says 0xFFFFFFFF.
                sizes = handle.read(16)
                if len(sizes) < 16:
                    return True
                long_data_size = int.from_bytes(sizes[8:16], "little")
            if chunk == audio_chunk:
                if chunk_size == 0xFFFFFFFF and long_data_size is not None:
                    chunk_size = long_data_size
                if chunk_size in _UNKNOWN_SIZES:
                    return False
                return position + 8 + chunk_size > size
            # Chunks are padded to an even length.
            position += 8 + chunk_size + (chunk_size & 1)
            if position > size:
                return True
        return False


def _container_kind(head: bytes) -> InputKind | None:
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return InputKind.WAV
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return InputKind.AIFF
    if head[:4] == b"fLaC":
        return InputKind.FLAC
    if head[:4] == b"OggS":
        return InputKind.OGG
    if head[4:8] == b"ftyp":
        return InputKind.MP4
    return None


def _frame_kind(head: bytes, handle: BinaryIO, offset: int) -> InputKind | None:
    """MP3 or ADTS AAC when ``head`` (read at ``offset``) starts on a plausible frame
    header; for MP3, one whose successor, when the file reaches that far, is one too."""
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # 12-bit sync 0xFFF and layer 00: ADTS
        freq_index = (b2 >> 2) & 0x0F
        return InputKind.AAC if freq_index <= _ADTS_MAX_FREQ_INDEX else None
    length = _mp3_frame_length(head)
    if length is None:
        return None
    # Two frames in a row is what decoders look for too: a lone 0xFFE after a tag can
    # be chance.
    handle.seek(offset + length)
    following = handle.read(4)
    if len(following) == 4 and _mp3_frame_length(following) is None:
        return None
    return InputKind.MP3


def _mp3_frame_length(header: bytes) -> int | None:
    """Bytes in the MPEG audio Layer III frame whose header starts ``header``, or None
    if it is not a valid one (sync, version, layer, bitrate and rate checked)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:  # 11-bit sync
        return None
    b1, b2 = header[1], header[2]
    version = (b1 >> 3) & 0x03
    layer = (b1 >> 1) & 0x03
    bitrate_index = (b2 >> 4) & 0x0F
    samplerate_index = (b2 >> 2) & 0x03
    if (
        version == _MPEG_VERSION_RESERVED
        or layer != _MPEG_LAYER_III
        or bitrate_index in (_MPEG_BITRATE_FREE, _MPEG_BITRATE_BAD)
        or samplerate_index == _MPEG_SAMPLERATE_BAD
    ):
        return None
    mpeg1 = version == _MPEG_VERSION_1
    bitrate = _LAYER3_KBPS[mpeg1][bitrate_index] * 1000
    rate = _MPEG_RATES[version][samplerate_index]
    padding = (b2 >> 1) & 0x01
    return (144 if mpeg1 else 72) * bitrate // rate + padding


def _id3_size(head: bytes) -> int | None:
    """Total bytes of the ID3v2 tag at the start of ``head``, or None if it is not one."""
    if len(head) < 10 or not head.startswith(b"ID3") or 0xFF in head[3:5]:
        return None
    size_bytes = head[6:10]
    # The size is "syncsafe": 7 bits per byte, the top bit always clear.
    if any(byte & 0x80 for byte in size_bytes):
        return None
    size = 0
    for byte in size_bytes:
        size = (size << 7) | byte
    has_footer = bool(head[5] & 0x10)
    return 10 + size + (10 if has_footer else 0)
