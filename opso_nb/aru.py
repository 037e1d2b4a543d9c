"""Recorder (ARU) metadata: AudioMoth header comments and file names.

AudioMoth firmware writes a sentence into the WAV ``ICMT`` comment, e.g.
``"Recorded at 09:32:00 04/05/2018 (UTC) by AudioMoth 0FE081F80FE081F0 at gain
setting 2 while battery state was 4.3V"``; newer firmware adds
``"... and temperature was 12.8C."`` and spells gain as ``"medium gain"``.
Files re-written by OpenSoundscape carry a JSON blob ``opso_metadata{...}``.
Both are parsed here into plain dicts; anything unrecognised gives an empty
dict, never an error.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

_AUDIOMOTH = re.compile(
    r"Recorded at (?P<time>\d{2}:\d{2}:\d{2}) (?P<date>\d{2}/\d{2}/\d{4}) "
    r"\((?P<tz>UTC(?:[+-]\d{1,2}(?::?\d{2})?)?)\) by (?P<device>AudioMoth [0-9A-Fa-f]+)"
)
_GAIN = re.compile(r"at (?:gain setting (?P<num>\d)|(?P<word>[a-z-]+) gain(?: setting)?)")
_BATTERY = re.compile(r"battery (?:state )?was (?P<less>less than )?(?P<volts>[\d.]+)\s?V")
_TEMPERATURE = re.compile(r"temperature was (?P<temp>-?[\d.]+)\s?C")


def _parse_tz(tz: str) -> dt.timezone:
    if tz == "UTC":
        return dt.timezone.utc
    match = re.fullmatch(r"UTC([+-])(\d{1,2}):?(\d{2})?", tz)
    sign = 1 if match.group(1) == "+" else -1
    offset = dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
    return dt.timezone(sign * offset)


def parse_audiomoth_comment(comment: str) -> dict:
    """Parse an AudioMoth comment sentence.

    Returns
    -------
    dict
        Keys present when found: ``recording_start_time`` (timezone-aware
        :class:`datetime.datetime`), ``device_id`` (e.g. ``"AudioMoth 0FE0..."``),
        ``gain_setting`` (int 0-4 or a word such as ``"medium"``),
        ``battery_state`` (volts, float), ``temperature_C`` (float).
        Empty if the text is not an AudioMoth comment.
    """
    if not comment:
        return {}
    match = _AUDIOMOTH.search(comment)
    if not match:
        return {}
    when = dt.datetime.strptime(f"{match['date']} {match['time']}", "%d/%m/%Y %H:%M:%S")
    out = {
        "recording_start_time": when.replace(tzinfo=_parse_tz(match["tz"])),
        "device_id": match["device"],
    }
    gain = _GAIN.search(comment)
    if gain:
        out["gain_setting"] = int(gain["num"]) if gain["num"] else gain["word"]
    battery = _BATTERY.search(comment)
    if battery:
        out["battery_state"] = float(battery["volts"])
    temperature = _TEMPERATURE.search(comment)
    if temperature:
        out["temperature_C"] = float(temperature["temp"])
    return out


def parse_audiomoth_metadata(metadata: dict) -> dict:
    """Add parsed AudioMoth fields to a raw metadata dict (as read by soundfile).

    Also unpacks an ``opso_metadata{...}`` JSON comment. The input is not changed.
    """
    out = dict(metadata or {})
    comment = out.get("comment") or ""
    if comment.startswith("opso_metadata"):
        try:
            blob = json.loads(comment[len("opso_metadata"):])
        except json.JSONDecodeError:
            blob = {}
        for key, value in blob.items():
            out.setdefault(key, value) if key != "comment" else None
        comment = blob.get("comment", "")
        out["comment"] = comment
        if isinstance(out.get("recording_start_time"), str):
            try:
                out["recording_start_time"] = dt.datetime.fromisoformat(out["recording_start_time"])
            except ValueError:
                pass
    parsed = parse_audiomoth_comment(comment)
    for key, value in parsed.items():
        out.setdefault(key, value)
    return out


def load_metadata(path, raise_exceptions: bool = False) -> dict | None:
    """Raw header metadata (title, comment, artist, date ...) of an audio file.

    Returns None (or raises, with ``raise_exceptions``) if the file cannot be read.
    """
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as handle:
            return handle.copy_metadata()
    except Exception:
        if raise_exceptions:
            raise
        return None


def parse_audiomoth_metadata_from_path(path) -> dict:
    """Parsed metadata (see :func:`parse_audiomoth_metadata`) of a file; ``{}`` if unreadable."""
    return parse_audiomoth_metadata(load_metadata(path) or {})


def hex_to_time(s: str) -> dt.datetime:
    """Convert a hexadecimal Unix time (old AudioMoth file names, e.g. ``5F16A04E``) to UTC."""
    return dt.datetime.fromtimestamp(int(s, 16), tz=dt.timezone.utc)


def audiomoth_start_time(file, filename_timezone: str = "UTC", to_utc: bool = False) -> dt.datetime:
    """Recording start time from an AudioMoth file name.

    Understands ``20190616_053000.WAV`` (new firmware) and ``5D06C358.WAV``
    (old, hexadecimal Unix time).

    Parameters
    ----------
    file : str or Path
    filename_timezone : str
        Time zone the file name is written in ("UTC" or an IANA name).
    to_utc : bool
        Convert the result to UTC.
    """
    from zoneinfo import ZoneInfo

    stem = Path(file).stem
    if re.fullmatch(r"\d{8}_\d{6}", stem):
        naive = dt.datetime.strptime(stem, "%Y%m%d_%H%M%S")
        tz = dt.timezone.utc if filename_timezone == "UTC" else ZoneInfo(filename_timezone)
        stamp = naive.replace(tzinfo=tz)
    elif re.fullmatch(r"[0-9A-Fa-f]{8}", stem):
        stamp = hex_to_time(stem)
    else:
        raise ValueError(f"{file}: file name is not an AudioMoth time stamp (YYYYMMDD_HHMMSS or 8 hex digits)")
    return stamp.astimezone(dt.timezone.utc) if to_utc else stamp
