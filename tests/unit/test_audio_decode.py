"""Decoding uploads: every accepted format reads back right, everything else is refused cleanly."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from mastering.audio import decode as decode_mod
from mastering.audio import ffmpeg as ffmpeg_mod
from mastering.audio.decode import decode_audio
from mastering.audio.ffmpeg import find_ffmpeg, summarise_stderr
from mastering.audio.sniff import sniff_kind
from mastering.errors import (
    AudioTooLong,
    AudioTooShort,
    ErrorCode,
    InternalError,
    InvalidAudio,
    ProcessingTimeout,
    SilentAudio,
    UnsupportedFormat,
)
from mastering.formats import InputKind
from mastering.track import Track
from mastering.validation import validate_for_mastering
from tests.audio_factory import (
    best_correlation,
    silence,
    to_ffmpeg,
    tone_mix,
    write_audio,
    write_wav,
)

LIMIT_S = 60.0


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 2 s stereo 44.1 kHz 16-bit WAV and the samples it was written from."""
    samples = tone_mix(2.0, 44_100, 2, seed=1)
    return write_wav(tmp_path / "source.wav", samples, 44_100, "PCM_16"), samples


def decode(path: Path, work_dir: Path, **kwargs: Any) -> Track:
    kwargs.setdefault("role", "target")
    kwargs.setdefault("max_duration_s", LIMIT_S)
    return decode_audio(path, work_dir, **kwargs)


def watch_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Record every ffmpeg the decoder runs: "probe" (headers only: no output named) or
    "decode" (anything that writes audio)."""
    calls: list[tuple[str, list[str]]] = []
    real_run, real_start = ffmpeg_mod.run_ffmpeg, ffmpeg_mod.start_ffmpeg

    def kind(args: list[str]) -> str:
        return "decode" if "-c:a" in args or "-map" in args else "probe"

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append((kind(args), list(args)))
        return real_run(args, **kwargs)

    def start(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        calls.append((kind(args), list(args)))
        return real_start(args, **kwargs)

    monkeypatch.setattr(ffmpeg_mod, "run_ffmpeg", run)
    monkeypatch.setattr(ffmpeg_mod, "start_ffmpeg", start)
    return calls


def forbid_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("ffmpeg must not be run for this file")

    monkeypatch.setattr(ffmpeg_mod, "run_ffmpeg", refuse)
    monkeypatch.setattr(ffmpeg_mod, "start_ffmpeg", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


# --- formats that decode -------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "subtype", "suffix", "tolerance"),
    [
        ("WAV", "PCM_16", "wav", 1 / 2**15),
        ("WAV", "PCM_24", "wav", 1 / 2**23),
        ("WAV", "FLOAT", "wav", 0.0),
        ("AIFF", "PCM_16", "aiff", 1 / 2**15),
        ("FLAC", "PCM_16", "flac", 1 / 2**15),
        ("FLAC", "PCM_24", "flac", 1 / 2**23),
    ],
)
def test_lossless_formats_decode_to_the_samples_written(
    tmp_path: Path, work_dir: Path, container: str, subtype: str, suffix: str, tolerance: float
) -> None:
    # Given a 2 s stereo 44.1 kHz file in a lossless format
    samples = tone_mix(2.0, 44_100, 2, seed=2)
    path = write_audio(
        tmp_path / f"in.{suffix}", samples, 44_100, container=container, subtype=subtype
    )

    # When it is decoded
    audio = decode(path, work_dir)

    # Then rate, channels, length and every sample match what was written
    assert audio.sample_rate == 44_100
    assert audio.channels == 2
    assert audio.frames == samples.shape[0]
    assert audio.samples.dtype == np.float32
    assert audio.samples.flags.c_contiguous
    np.testing.assert_allclose(audio.samples, samples, atol=tolerance + 1e-7)
    assert list(work_dir.iterdir()) == []


def test_mono_48k_wav_stays_mono_at_48k(tmp_path: Path, work_dir: Path) -> None:
    # Given a mono 48 kHz WAV of 1.5 s
    samples = tone_mix(1.5, 48_000, 1, seed=3)
    path = write_wav(tmp_path / "mono.wav", samples, 48_000, "PCM_24")

    # When it is decoded
    audio = decode(path, work_dir, role="reference")

    # Then it is one channel at 48 kHz, 1.5 s long
    assert (audio.sample_rate, audio.channels) == (48_000, 1)
    assert audio.samples.shape == (72_000, 1)
    assert audio.duration_s == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("suffix", "output_args", "rate"),
    [
        ("mp3", ("-c:a", "libmp3lame", "-b:a", "192k"), 44_100),
        ("m4a", ("-c:a", "aac", "-b:a", "192k"), 44_100),
        ("aac", ("-c:a", "aac", "-b:a", "192k", "-f", "adts"), 44_100),
        ("opus", ("-c:a", "libopus", "-b:a", "128k"), 48_000),
        # libsndfile reads MP3 inside a WAV but not Yamaha ADPCM; ffmpeg reads both.
        ("wav", ("-c:a", "libmp3lame", "-b:a", "192k", "-f", "wav"), 44_100),
        ("wav", ("-c:a", "adpcm_yamaha", "-f", "wav"), 44_100),
    ],
)
def test_lossy_formats_made_by_ffmpeg_decode_to_the_same_music(
    tmp_path: Path,
    work_dir: Path,
    source: tuple[Path, np.ndarray],
    suffix: str,
    output_args: tuple[str, ...],
    rate: int,
) -> None:
    # Given a 2 s stereo track encoded by ffmpeg into a lossy format
    wav, samples = source
    path = to_ffmpeg(wav, tmp_path / f"upload.{suffix}", *output_args)

    # When it is decoded
    audio = decode(path, work_dir)

    # Then it has the codec's rate, both channels, about 2 s, and sounds like the source
    assert audio.sample_rate == rate
    assert audio.channels == 2
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    if rate == 44_100:
        assert best_correlation(audio.samples, samples) > 0.9
    assert list(work_dir.iterdir()) == []


def test_wav_libsndfile_cannot_read_falls_back_to_ffmpeg(
    tmp_path: Path,
    work_dir: Path,
    source: tuple[Path, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a WAV holding Yamaha ADPCM, which libsndfile refuses, and a watch on ffmpeg
    wav, samples = source
    path = to_ffmpeg(wav, tmp_path / "adpcm.wav", "-c:a", "adpcm_yamaha", "-f", "wav")
    with pytest.raises(sf.LibsndfileError):
        sf.info(path)
    calls = watch_ffmpeg(monkeypatch)

    # When it is decoded
    audio = decode(path, work_dir)

    # Then ffmpeg read its headers, then decoded it, each time with the WAV demuxer pinned
    # and only local files allowed
    assert [kind for kind, _ in calls] == ["probe", "decode"]
    for _, args in calls:
        assert args[args.index("-f") + 1] == "wav"
        assert args[args.index("-protocol_whitelist") + 1] == "file"
    # ADPCM pads its last block, so the length is close rather than exact
    assert audio.duration_s == pytest.approx(2.0, abs=0.05)
    assert best_correlation(audio.samples, samples) > 0.9
    assert list(work_dir.iterdir()) == []


def test_ogg_vorbis_written_by_soundfile_decodes(tmp_path: Path, work_dir: Path) -> None:
    # Given an Ogg Vorbis file
    samples = tone_mix(2.0, 44_100, 2, seed=4)
    path = write_audio(tmp_path / "in.ogg", samples, 44_100, container="OGG", subtype="VORBIS")

    # When it is decoded
    audio = decode(path, work_dir)

    # Then it is the same 2 s of stereo music
    assert (audio.sample_rate, audio.channels) == (44_100, 2)
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    assert best_correlation(audio.samples, samples) > 0.9


def test_file_name_does_not_matter_only_content(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given a FLAC file uploaded under a misleading name with a colon and a leading dash
    wav, samples = source
    path = to_ffmpeg(wav, tmp_path / "-i http:evil.mp3", "-c:a", "flac", "-f", "flac")

    # When it is decoded
    audio = decode(path, work_dir)

    # Then the FLAC inside is what is read
    assert audio.frames == samples.shape[0]


# --- files that are refused ------------------------------------------------------------


def test_text_named_wav_is_not_audio(tmp_path: Path, work_dir: Path) -> None:
    # Given a text file that claims to be a WAV
    path = tmp_path / "song.wav"
    path.write_text("this is not audio\n" * 20)

    # When it is decoded, Then the user is told it is not audio and what is accepted
    with pytest.raises(InvalidAudio) as caught:
        decode(path, work_dir)
    assert caught.value.code is ErrorCode.INVALID_AUDIO
    assert caught.value.message.startswith("The target is not an audio file we can read")
    assert "WAV" in caught.value.message
    assert "FLAC" in caught.value.message


def test_hls_playlist_named_mp3_never_reaches_ffmpeg(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an HLS playlist pointing at a remote segment, uploaded as an MP3
    path = tmp_path / "song.mp3"
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
        "#EXTINF:10.0,\nhttp://169.254.169.254/latest/meta-data/\n#EXT-X-ENDLIST\n"
    )
    forbid_ffmpeg(monkeypatch)

    # When it is decoded as the reference
    with pytest.raises(InvalidAudio) as caught:
        decode(path, work_dir, role="reference")

    # Then it is refused by its bytes alone, naming the reference
    assert "reference" in caught.value.message
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body>not audio</body></html>",
        b"PK\x03\x04" + bytes(60),
        b'{"json": true}',
        bytes(4096),
    ],
    ids=["html", "zip", "json", "zeros"],
)
def test_other_non_audio_is_refused_without_ffmpeg(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    # Given a non-audio upload
    path = tmp_path / "upload.m4a"
    path.write_bytes(content)
    forbid_ffmpeg(monkeypatch)

    # When it is decoded, Then it is invalid audio
    with pytest.raises(InvalidAudio):
        decode(path, work_dir)


def test_empty_file_is_refused(tmp_path: Path, work_dir: Path) -> None:
    # Given a zero-byte upload
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")

    # When it is decoded, Then the user hears it is empty
    with pytest.raises(InvalidAudio, match="The target file is empty"):
        decode(path, work_dir)


@pytest.mark.parametrize("keep", ["half", "header", "header+3", "20 bytes"])
def test_truncated_wav_is_refused_as_incomplete(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray], keep: str
) -> None:
    # Given a WAV cut short (an interrupted upload): mid-data, right after the header,
    # mid-frame or mid-header
    wav, _ = source
    data = wav.read_bytes()
    cut = {"half": len(data) // 2, "header": 44, "header+3": 47, "20 bytes": 20}[keep]
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:cut])

    # When it is decoded, Then the user is told to upload it again, rather than getting
    # a master of whatever part arrived
    with pytest.raises(InvalidAudio, match="target"):
        decode(path, work_dir)
    assert list(work_dir.iterdir()) == []


def test_wav_from_a_streaming_writer_with_unknown_size_still_decodes(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given a WAV whose RIFF size says "unknown" (0xFFFFFFFF), as streaming recorders write
    wav, samples = source
    data = bytearray(wav.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(data))

    # When it is decoded, Then all of it comes back
    assert decode(path, work_dir).frames == samples.shape[0]


def test_truncated_flac_is_handled(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given a FLAC cut in the middle of a frame
    wav, _ = source
    flac = to_ffmpeg(wav, tmp_path / "full.flac", "-c:a", "flac")
    path = tmp_path / "cut.flac"
    path.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2 + 7])

    # When it is decoded, Then it is partly decoded or refused, never a crash
    try:
        audio = decode(path, work_dir)
    except InvalidAudio:
        pass
    else:
        assert 0 < audio.duration_s <= 2.0
    assert list(work_dir.iterdir()) == []


def test_six_channel_wav_is_unsupported(tmp_path: Path, work_dir: Path) -> None:
    # Given a 5.1 WAV
    path = write_wav(tmp_path / "surround.wav", tone_mix(0.5, 48_000, 6), 48_000)

    # When it is decoded, Then the user learns only mono and stereo are taken
    with pytest.raises(UnsupportedFormat) as caught:
        decode(path, work_dir)
    assert caught.value.message == ("The target has 6 channels; only mono and stereo are supported")


def test_six_channel_m4a_is_unsupported(tmp_path: Path, work_dir: Path) -> None:
    # Given a 5.1 AAC in an M4A (decoded by ffmpeg)
    wav = write_wav(tmp_path / "surround.wav", tone_mix(0.5, 48_000, 6), 48_000)
    path = to_ffmpeg(wav, tmp_path / "surround.m4a", "-c:a", "aac")

    # When it is decoded, Then it is refused the same way and leaves nothing behind
    with pytest.raises(UnsupportedFormat, match="6 channels"):
        decode(path, work_dir)
    assert list(work_dir.iterdir()) == []


def test_sample_rate_below_8_khz_is_unsupported(tmp_path: Path, work_dir: Path) -> None:
    # Given a 4 kHz WAV
    path = write_wav(tmp_path / "lofi.wav", tone_mix(2.0, 4_000, 1), 4_000)

    # When it is decoded, Then the user is told the rate is out of range
    with pytest.raises(UnsupportedFormat, match="sample rate of 4000 Hz"):
        decode(path, work_dir)


def test_too_long_wav_is_refused_before_reading_samples(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 3 s WAV, a 2 s limit, and a soundfile that fails if asked for samples
    path = write_wav(tmp_path / "long.wav", tone_mix(3.0, 8_000, 1), 8_000)

    def no_reading(*args: object, **kwargs: object) -> None:
        pytest.fail("samples were read from a file already known to be too long")

    monkeypatch.setattr(sf.SoundFile, "read", no_reading)
    monkeypatch.setattr(sf, "read", no_reading)

    # When it is decoded, Then it is too long, with the limit in the message
    with pytest.raises(AudioTooLong) as caught:
        decode(path, work_dir, max_duration_s=2.0)
    assert caught.value.message == "The target is longer than the 2 seconds limit"


def test_too_long_m4a_is_refused(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given a 2 s M4A and a 1 s limit
    wav, _ = source
    path = to_ffmpeg(wav, tmp_path / "long.m4a", "-c:a", "aac")

    # When it is decoded, Then it is too long and the temporary decode is gone
    with pytest.raises(AudioTooLong, match="1 second limit"):
        decode(path, work_dir, max_duration_s=1.0, role="reference")
    assert list(work_dir.iterdir()) == []


def test_limit_in_minutes_reads_naturally(tmp_path: Path, work_dir: Path) -> None:
    # Given a 16-minute file and limits below its length
    path = write_wav(tmp_path / "x.wav", np.zeros((8_000 * 16 * 60, 1), np.float32), 8_000)

    # When it is decoded, Then each limit reads the way people say it
    with pytest.raises(AudioTooLong, match=r"0\.5 seconds limit"):
        decode(path, work_dir, max_duration_s=0.5)
    with pytest.raises(AudioTooLong, match="The target is longer than the 15 minutes limit"):
        decode(path, work_dir, max_duration_s=900.0)


def test_nan_samples_are_invalid(tmp_path: Path, work_dir: Path) -> None:
    # Given a float WAV with a NaN in it
    samples = tone_mix(1.0, 44_100, 2)
    samples[1000, 1] = np.nan
    path = write_wav(tmp_path / "nan.wav", samples, 44_100, "FLOAT")

    # When it is decoded, Then it is invalid audio
    with pytest.raises(InvalidAudio, match="target contains invalid samples"):
        decode(path, work_dir)


def test_corrupt_m4a_error_names_no_paths(tmp_path: Path, work_dir: Path) -> None:
    # Given something that starts like an MP4 but is garbage after the ftyp box
    path = tmp_path / "secret-name.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00isomM4A " + bytes(range(256)) * 8)

    # When it is decoded
    with pytest.raises(InvalidAudio) as caught:
        decode(path, work_dir)

    # Then the message is ours, about the target, and says what to do: no file names,
    # directories or decoder jargon ("Invalid data found when processing input", "moov")
    assert caught.value.message == (
        "The target could not be decoded: the file is damaged or not in a format we "
        "read; upload WAV, AIFF, FLAC, MP3, Ogg (Vorbis or Opus), M4A or AAC audio"
    )
    assert list(work_dir.iterdir()) == []


def test_mp4_without_audio_says_so(tmp_path: Path, work_dir: Path) -> None:
    # Given an MP4 with only a video stream
    path = tmp_path / "video.mp4"
    subprocess.run(
        [
            find_ffmpeg(None),
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=16x16:d=0.2",
            "-c:v",
            "mpeg4",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    # When it is decoded, Then the user is told it has no audio
    with pytest.raises(InvalidAudio, match="The target could not be decoded: it contains no audio"):
        decode(path, work_dir)


# --- validate_for_mastering ----------------------------------------------------------


def test_very_short_audio_is_too_short() -> None:
    # Given 0.05 s of music
    audio = Track(tone_mix(0.05, 44_100, 2), 44_100)

    # When it is validated against a 1 s minimum, Then it is too short
    with pytest.raises(AudioTooShort) as caught:
        validate_for_mastering(audio, role="target", min_duration_s=1.0)
    assert caught.value.message == "The target is 0.05 seconds long; it must be at least 1 second"


def test_silent_audio_is_refused() -> None:
    # Given 2 s of digital silence
    audio = Track(silence(2.0), 44_100)

    # When it is validated, Then it is silent
    with pytest.raises(SilentAudio, match="The reference is silent"):
        validate_for_mastering(audio, role="reference", min_duration_s=1.0)


def test_music_passes_validation() -> None:
    # Given 2 s of music, When validated, Then nothing is raised
    audio = Track(tone_mix(2.0, 44_100, 2), 44_100)
    validate_for_mastering(audio, role="target", min_duration_s=1.0)


def test_decoded_audio_reports_its_shape() -> None:
    audio = Track(np.zeros((22_050, 2), np.float32), 44_100)
    assert (audio.frames, audio.channels, audio.duration_s) == (22_050, 2, 0.5)


# --- sniffing -------------------------------------------------------------------------


def _id3(body_size: int) -> bytes:
    size = bytes((body_size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + size + bytes(body_size)


MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(60)  # MPEG-1 Layer III, 128 kb/s, 44.1 kHz
ADTS_FRAME = b"\xff\xf1\x50\x80\x28\x1f\xfc" + bytes(57)
# Two whole frames: 128 kb/s at 44.1 kHz is 417 bytes a frame (no padding bit).
MP3_FRAME_PAIR = (b"\xff\xfb\x90\x64" + bytes(413)) * 2


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(52), InputKind.WAV),
        (b"RF64\xff\xff\xff\xffWAVEds64" + bytes(52), InputKind.WAV),
        (b"FORM\x00\x00\x00\x20AIFFCOMM" + bytes(52), InputKind.AIFF),
        (b"FORM\x00\x00\x00\x20AIFCFVER" + bytes(52), InputKind.AIFF),
        (b"fLaC\x00\x00\x00\x22" + bytes(56), InputKind.FLAC),
        (b"OggS\x00\x02" + bytes(58), InputKind.OGG),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(48), InputKind.MP4),
        (MP3_FRAME, InputKind.MP3),
        (_id3(300) + MP3_FRAME, InputKind.MP3),
        (_id3(20), None),  # a tag with no audio after it is not an MP3
        (_id3(20) + bytes(700) + MP3_FRAME, InputKind.MP3),  # padding after the tag
        (_id3(100) + MP3_FRAME_PAIR, InputKind.MP3),
        (_id3(100) + MP3_FRAME_PAIR[:417] + b"RIFF" + bytes(60), None),  # lone frame sync
        (_id3(100) + b".snd\x00\x00\x00\x18" + bytes(56), None),  # Sun AU after a tag
        (_id3(100) + b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(52), InputKind.WAV),
        (_id3(100) + b"fLaC" + bytes(60), InputKind.FLAC),
        (ADTS_FRAME, InputKind.AAC),
        (_id3(10) + ADTS_FRAME, InputKind.AAC),
        (b"", None),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", None),
        (b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(52), None),
        (b"\xff\xfd\x90\x64" + bytes(60), None),  # MPEG Layer II, not III
        (b"\xff\xfb\xf0\x64" + bytes(60), None),  # bitrate index 15 is invalid
        (b"\xff\xfb\x9c\x64" + bytes(60), None),  # sample-rate index 3 is reserved
        (b"ID3\x04\x00\x00\x80\x80\x80\x80" + bytes(60), None),  # size is not syncsafe
    ],
)
def test_sniff_kind_reads_magic_bytes(
    tmp_path: Path, content: bytes, kind: InputKind | None
) -> None:
    # Given a file with these first bytes, When sniffed, Then this kind (or none) is seen
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    assert sniff_kind(path) is kind


# --- ffmpeg plumbing ------------------------------------------------------------------


def test_find_ffmpeg_prefers_the_configured_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment is config's to read (FFMPEG_PATH -> Settings.ffmpeg_path), not ffmpeg's
    monkeypatch.setenv("FFMPEG_PATH", "/opt/env/ffmpeg")
    assert find_ffmpeg("/opt/explicit/ffmpeg") == "/opt/explicit/ffmpeg"
    assert Path(find_ffmpeg(None)).exists()
    assert find_ffmpeg(None) != "/opt/env/ffmpeg"


def test_missing_ffmpeg_is_an_internal_error(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given an M4A and an ffmpeg path that does not exist
    wav, _ = source
    path = to_ffmpeg(wav, tmp_path / "x.m4a", "-c:a", "aac")

    # When it is decoded, Then the failure is ours, not the user's file
    with pytest.raises(InternalError, match="ffmpeg is not available"):
        decode(path, work_dir, ffmpeg_path=str(tmp_path / "no-such-ffmpeg"))


def test_stderr_summary_drops_paths_and_prefixes() -> None:
    stderr = (
        b"[in#0 @ 0x563e203391c0] Failed to find two consecutive MPEG audio frames.\n"
        b"[in#0 @ 0x563e20338e40] Error opening input: Invalid data found when processing input\n"
        b"Error opening input file file:/tmp/jobs/abc/target.\n"
        b"Error opening input files: Invalid data found when processing input\n"
    )
    assert summarise_stderr(stderr) == "Invalid data found when processing input"


def test_ffmpeg_that_runs_too_long_is_killed() -> None:
    # Given an ffmpeg job that would run for a minute in real time
    args = ["-nostdin", "-re", "-f", "lavfi", "-i", "anullsrc=d=60", "-f", "null", "-"]

    # When it is run with a short timeout, Then it is stopped as a processing timeout
    with pytest.raises(ProcessingTimeout):
        ffmpeg_mod.run_ffmpeg(args, ffmpeg_path=None, timeout_s=0.3)


def test_decode_timeout_names_the_role_and_cleans_up(
    tmp_path: Path,
    work_dir: Path,
    source: tuple[Path, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an M4A, and a decoder allowed no time at all
    wav, _ = source
    path = to_ffmpeg(wav, tmp_path / "x.m4a", "-c:a", "aac")
    monkeypatch.setattr(decode_mod, "DECODE_TIMEOUT_S", 0.0)

    # When it is decoded, Then the timeout names the reference and no partial output is left
    with pytest.raises(ProcessingTimeout, match="Decoding the reference took too long"):
        decode(path, work_dir, role="reference")
    assert list(work_dir.iterdir()) == []


def test_high_rate_audio_gets_a_shorter_limit_in_proportion(tmp_path: Path, work_dir: Path) -> None:
    # Given a 2-second stereo 96 kHz file and a 3-second limit (which holds in full
    # up to 48 kHz stereo)
    path = write_wav(tmp_path / "hires.wav", tone_mix(2.0, 96_000, 2), 96_000)

    # When it is decoded, Then it is refused with the limit for its rate and channels
    with pytest.raises(AudioTooLong, match=r"1\.5 seconds limit for 2-channel audio at 96000"):
        decode(path, work_dir, max_duration_s=3.0)
    # And the same length at 48 kHz is within the limit's full length
    ok = write_wav(tmp_path / "cd.wav", tone_mix(2.9, 48_000, 2), 48_000)
    assert decode(ok, work_dir, max_duration_s=3.0).sample_rate == 48_000
    assert list(work_dir.iterdir()) == []


# --- hostile and damaged uploads ---------------------------------------------------------


def _lavfi_to(path: Path, source: str, *output_args: str) -> Path:
    """Render an ffmpeg lavfi source (e.g. "anullsrc=...") into ``path``."""
    subprocess.run(
        [
            *(find_ffmpeg(None), "-nostdin", "-loglevel", "error"),
            *("-f", "lavfi", "-i", source, *output_args, str(path)),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@pytest.mark.parametrize(
    ("layout", "rate", "message"),
    [
        ("7.1", 384_000, "The target has 8 channels; only mono and stereo are supported"),
        (
            "stereo",
            384_000,
            "The target has a sample rate of 384000 Hz; 8000 to 192000 Hz is supported",
        ),
    ],
)
def test_small_file_that_unpacks_huge_is_refused_from_its_headers(
    tmp_path: Path,
    work_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    rate: int,
    message: str,
) -> None:
    # Given a FLAC-in-MP4 of well under a megabyte holding 20 s of silence at 384 kHz
    # (in 7.1: 61 M samples, 245 MB as float32)
    path = _lavfi_to(
        tmp_path / "bomb.mp4",
        f"anullsrc=r={rate}:cl={layout}:d=20",
        "-c:a",
        "flac",
        "-strict",
        "experimental",
    )
    assert path.stat().st_size < 1_000_000
    calls = watch_ffmpeg(monkeypatch)

    # When it is decoded
    with pytest.raises(UnsupportedFormat) as caught:
        decode(path, work_dir)

    # Then it is refused for its shape, from its headers alone: nothing was decoded
    assert caught.value.message == message
    assert [kind for kind, _ in calls] == ["probe"]
    assert list(work_dir.iterdir()) == []


def test_too_long_m4a_is_refused_before_decoding(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 2 s M4A and a 1 s limit
    wav, _ = source
    path = to_ffmpeg(wav, tmp_path / "long.m4a", "-c:a", "aac")
    calls = watch_ffmpeg(monkeypatch)

    # When it is decoded, Then it is too long, known from its header alone
    with pytest.raises(AudioTooLong, match="The target is longer than the 1 second limit"):
        decode(path, work_dir, max_duration_s=1.0)
    assert [kind for kind, _ in calls] == ["probe"]


def _aac_longer_than_it_looks(tmp_path: Path, quiet_s: float) -> Path:
    """Raw AAC (ADTS) opening with 2 s of loud noise, then ``quiet_s`` of a faint tone:
    ffmpeg guesses its length from the first frames' bitrate, far too short."""
    return _lavfi_to(
        tmp_path / "sneaky.aac",
        f"anoisesrc=d=2:a=0.9:r=44100,apad=pad_dur={quiet_s}",
        "-af",
        "volume=enable='gt(t,2)':volume=0.001",
        "-ac",
        "2",
        "-c:a",
        "aac",
        "-b:a",
        "256k",
        "-f",
        "adts",
    )


def test_a_stream_longer_than_its_header_says_is_stopped_at_the_limit(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given raw AAC of 32 s whose header suggests far less, and a 10 s limit
    path = _aac_longer_than_it_looks(tmp_path, quiet_s=30.0)
    probe = ffmpeg_mod.probe_audio(
        ["-f", "aac", "-i", f"file:{path}"], ffmpeg_path=None, timeout_s=30
    )
    assert probe.audio is not None
    assert probe.audio.duration_s is not None
    assert probe.audio.duration_s < 10.0
    calls = watch_ffmpeg(monkeypatch)

    # When it is decoded
    with pytest.raises(AudioTooLong, match="The target is longer than the 10 seconds limit"):
        decode(path, work_dir, max_duration_s=10.0)

    # Then ffmpeg was never allowed past one second beyond the limit
    ((_, decoding),) = [call for call in calls if call[0] == "decode"]
    assert float(decoding[decoding.index("-t") + 1]) <= 11.0
    assert list(work_dir.iterdir()) == []


def test_a_stream_longer_than_its_header_says_but_within_the_limit_decodes_whole(
    tmp_path: Path, work_dir: Path
) -> None:
    # Given raw AAC of 42 s whose header suggests far less
    path = _aac_longer_than_it_looks(tmp_path, quiet_s=40.0)

    # When it is decoded with a minute's limit, Then all of it comes back
    audio = decode(path, work_dir)
    assert audio.duration_s == pytest.approx(42.0, abs=0.1)
    assert audio.samples.flags.c_contiguous
    assert audio.samples.flags.owndata


def test_id3_tag_followed_by_another_format_is_not_audio_we_take(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given a Sun AU file behind an ID3 tag, uploaded as an MP3
    wav, _ = source
    au = to_ffmpeg(wav, tmp_path / "song.au", "-f", "au")
    path = tmp_path / "song.mp3"
    path.write_bytes(_id3(500) + au.read_bytes())

    # When it is decoded, Then it is refused as not audio we read, not decoded as an MP3
    with pytest.raises(InvalidAudio, match="The target is not an audio file we can read"):
        decode(path, work_dir)


@pytest.mark.parametrize("container", ["WAV", "AIFF"])
def test_tagged_file_cut_short_is_refused_as_incomplete(
    tmp_path: Path, work_dir: Path, container: str
) -> None:
    # Given a WAV or AIFF behind an ID3 tag (as some taggers write them), cut off in the
    # middle of its audio
    samples = tone_mix(2.0, 44_100, 2, seed=5)
    whole = write_audio(
        tmp_path / f"whole.{container.lower()}",
        samples,
        44_100,
        container=container,
        subtype="PCM_16",
    )
    data = whole.read_bytes()
    path = tmp_path / "tagged-cut"
    path.write_bytes(_id3(200) + data[: len(data) * 3 // 4])

    # When it is decoded, Then the user is told it is incomplete, not given 1.5 s of master
    with pytest.raises(InvalidAudio) as caught:
        decode(path, work_dir)
    assert caught.value.message.startswith("The target file is incomplete")


@pytest.mark.parametrize("container", ["WAV", "AIFF"])
def test_tagged_whole_file_decodes_in_full(tmp_path: Path, work_dir: Path, container: str) -> None:
    # Given a whole WAV or AIFF behind an ID3 tag
    samples = tone_mix(2.0, 44_100, 2, seed=6)
    whole = write_audio(
        tmp_path / f"whole.{container.lower()}",
        samples,
        44_100,
        container=container,
        subtype="PCM_16",
    )
    path = tmp_path / "tagged"
    path.write_bytes(_id3(200) + whole.read_bytes())

    # When it is decoded, Then every frame comes back
    assert decode(path, work_dir).frames == samples.shape[0]


def test_wav_whose_data_chunk_claims_more_than_the_file_holds_is_incomplete(
    tmp_path: Path, work_dir: Path, source: tuple[Path, np.ndarray]
) -> None:
    # Given a WAV whose RIFF size says "unknown" (so the file's size cannot be checked
    # against it) while its data chunk claims twice the bytes the file holds
    wav, _ = source
    data = bytearray(wav.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.index(b"data")
    claimed = int.from_bytes(data[at + 4 : at + 8], "little") * 2
    data[at + 4 : at + 8] = claimed.to_bytes(4, "little")
    path = tmp_path / "overclaims.wav"
    path.write_bytes(bytes(data))

    # When it is decoded, Then it is incomplete
    with pytest.raises(InvalidAudio, match="The target file is incomplete"):
        decode(path, work_dir)


def test_float_samples_far_beyond_full_scale_are_refused(tmp_path: Path, work_dir: Path) -> None:
    # Given a float WAV whose samples are finite but 1e30 times a normal mix's
    samples = tone_mix(2.0, 44_100, 2, seed=7) * np.float32(1e30)
    path = write_wav(tmp_path / "huge.wav", samples, 44_100, "FLOAT")

    # When it is decoded, Then it is refused as invalid audio that says what is wrong
    with pytest.raises(InvalidAudio) as caught:
        decode(path, work_dir)
    assert caught.value.message == (
        "The target has samples far beyond full scale (peak +594 dBFS); export it "
        "normalised, peaking at or below 0 dBFS, and upload it again"
    )


def test_float_samples_over_full_scale_from_a_clipped_mix_are_kept(
    tmp_path: Path, work_dir: Path
) -> None:
    # Given a float WAV peaking at +14 dBFS, as a mix bus that clipped in a DAW exports it
    samples = tone_mix(2.0, 44_100, 2, seed=8) * np.float32(10.0)
    path = write_wav(tmp_path / "hot.wav", samples, 44_100, "FLOAT")

    # When it is decoded, Then it is kept as it is, for the engine to bring down
    audio = decode(path, work_dir)
    assert audio.peak() == pytest.approx(10 ** (14 / 20), rel=1e-3)


def test_probe_reads_ffmpegs_description_and_ignores_tags_posing_as_streams() -> None:
    # Given ffmpeg's description of an input whose tags try to pass for a stream and a
    # duration (tags are indented deeper, continuation lines start with ": ")
    stderr = (
        b"Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/tmp/x':\n"
        b"  Metadata:\n"
        b"    Duration: 00:00:01.00 : x\n"
        b"    comment         : a\n"
        b"                    :   Stream #0:0: Audio: pcm, 8000 Hz, mono\n"
        b"  Duration: 00:02:00.00, start: 0.000000, bitrate: 119 kb/s\n"
        b"  Stream #0:0[0x1](und): Video: h264, yuv420p, 16x16\n"
        b"  Stream #0:1[0x2](und): Audio: flac (fLaC / 0x43614C66), 384000 Hz, 7.1, s16, "
        b"107 kb/s (default)\n"
    )

    # When it is parsed, Then the real audio stream and duration are what it reports
    probe = ffmpeg_mod.parse_probe(stderr)
    assert probe.opened
    assert probe.audio == ffmpeg_mod.AudioStream(
        sample_rate=384_000, channels=8, duration_s=120.0, duration_estimated=False
    )


@pytest.mark.parametrize(
    ("layout", "channels"),
    [
        ("mono", 1),
        ("stereo", 2),
        ("2 channels", 2),
        ("downmix", 2),
        ("2.1", 3),
        ("3.0(back)", 3),
        ("quad(side)", 4),
        ("5.1(side)", 6),
        ("7.1.4", 12),
        ("22.2", 24),
        ("hexadecagonal", 16),
        ("ambisonic 1", 4),
        ("something new", None),
    ],
)
def test_layout_names_count_their_channels(layout: str, channels: int | None) -> None:
    assert ffmpeg_mod.layout_channels(layout) == channels
