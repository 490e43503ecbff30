"""What an uploaded file really is, judged by its first bytes.

The declared content type and file name are the client's word; these bytes decide
which decoder (and which ffmpeg demuxer) may touch the file. Anything not recognised,
notably HLS playlists and other text that ffmpeg would happily follow, is refused
before any decoder opens it.
"""

from __future__ import annotations

from pathlib import Path

from mastering.formats import InputKind

_HEAD_BYTES = 64
# Nested or repeated ID3v2 tags are legal; a few are plenty before giving up.
_MAX_ID3_TAGS = 4

# Bitrate index 0 ("free format") and 15 (invalid) are refused, as is sample-rate index 3.
_MPEG_BITRATE_FREE = 0
_MPEG_BITRATE_BAD = 15
_MPEG_SAMPLERATE_BAD = 3
_MPEG_VERSION_RESERVED = 1
_MPEG_LAYER_III = 1
# ADTS sampling-frequency indices 13-15 are reserved.
_ADTS_MAX_FREQ_INDEX = 12


def sniff_kind(path: Path) -> InputKind | None:
    """The kind of audio container in ``path`` by its magic bytes, or None if not audio we take."""
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
        kind = _container_kind(head)
        if kind is not None:
            return kind
        if not head.startswith(b"ID3"):
            return _frame_kind(head)
        # Some encoders tag FLAC and ADTS with ID3 too, so look at what follows the tag.
        offset = 0
        for _ in range(_MAX_ID3_TAGS):
            tag_size = _id3_size(head)
            if tag_size is None:
                break
            offset += tag_size
            handle.seek(offset)
            head = handle.read(_HEAD_BYTES)
            if not head.startswith(b"ID3"):
                return _container_kind(head) or _frame_kind(head) or InputKind.MP3
        # A well-formed ID3 tag marks an MP3 even if padding hides the first frame.
        return InputKind.MP3 if offset else None


# RIFF/FORM size fields that mean "unknown" (streamed writers, RF64's placeholder).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def is_truncated(path: Path) -> bool:
    """Whether a WAV or AIFF file is shorter than its own header says.

    libsndfile quietly decodes the part that is present, so an interrupted upload
    would be mastered as a shorter track; the user would rather be told.
    """
    with path.open("rb") as handle:
        head = handle.read(12)
    if len(head) < 12:
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        declared = int.from_bytes(head[4:8], "little")
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        declared = int.from_bytes(head[4:8], "big")
    else:
        return False
    if declared in _UNKNOWN_SIZES:
        return False
    # The chunk size excludes the 8-byte chunk header; a pad byte may be missing.
    return path.stat().st_size < declared + 8 - 1


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


def _frame_kind(head: bytes) -> InputKind | None:
    """MP3 or ADTS AAC when ``head`` starts on a plausible frame header."""
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # 12-bit sync 0xFFF and layer 00: ADTS
        freq_index = (b2 >> 2) & 0x0F
        return InputKind.AAC if freq_index <= _ADTS_MAX_FREQ_INDEX else None
    if b1 & 0xE0 != 0xE0:  # 11-bit MPEG audio sync
        return None
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
    return InputKind.MP3


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
