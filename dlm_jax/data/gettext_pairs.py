"""Real parallel text offline: translation pairs from the machine's gettext catalogs (``.mo``).

Every Debian/Ubuntu system (and Colab) carries human-translated UI strings under
``<dir>/<lang>/LC_MESSAGES/<domain>.mo``. A catalog maps an English ``msgid`` to its translation,
so English -> L pairs are (msgid, msgstr); pairs between two other languages join the two
catalogs of the same domain on (context, msgid). Measured on the development machine
(``/usr/share/locale``, 86 German catalogs): en -> de gives 33,533 unique pairs with the defaults
below (3-100 characters a side).

The binary format is parsed here (it is a header and two tables of (length, offset)), not with
``gettext.GNUTranslations``: the stdlib rejects whole catalogs whose header is not UTF-8, folds
plural forms into ``(msgid, n)`` keys and keeps no file-level error handling. Handled deliberately:

* context (``msgctxt``, stored as ``"ctx\\x04msgid"``): stripped from the text; kept in the join key;
  GnuPG's in-text context ``"|FILE|msgid"`` is removed (and a ``|DATEI|`` label the target kept);
* plural entries (``"sing\\0plural"`` -> ``"s0\\0s1..."``): ``plurals="singular"`` keeps the
  (singular msgid, msgstr[0]) pair (msgstr[0] is the n = 1 form in languages that have one);
  ``"skip"`` drops them;
* placeholders (printf ``%s %5.2f %ld``, positional ``%1$s``, Python ``%(name)s``, Qt ``%1``,
  braces ``{0} {name} {}``): a pair is kept only if both sides have the same multiset
  (positions removed, so ``%s %s`` matches ``%2$s %1$s``; ``%%`` is text);
* accelerator markers: a ``_`` or ``&`` before a letter/digit at the start of a word of the
  source marks a mnemonic; it is removed there and one marker of the same kind is removed
  from the target (German puts them mid-word: ``Ö_ffnen``); there ``__``/``&&`` become ``_``/``&``;
* dropped: the header, empty or untranslated entries (``msgfmt`` leaves fuzzy ones out of
  ``.mo`` files already), multi-line ones (a newline, carriage return or tab on either side),
  pairs whose target equals the source, and pairs outside ``[min_chars, max_chars]`` characters;
* duplicates: exact (source, target) repeats are kept once; pairs are sorted, so the result does
  not depend on the order files are found in;
* unreadable or malformed files are skipped with a ``UserWarning`` naming them.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import struct
import warnings
from collections import Counter
from typing import Iterable, Sequence

__all__ = ["read_mo", "MoEntry", "catalog_paths", "clean_pair", "placeholders", "strip_accelerator",
           "gettext_pairs", "DEFAULT_DIRS"]

DEFAULT_DIRS = "/usr/share/locale,/usr/share/locale-langpack"
_MAGIC_LE, _MAGIC_BE = 0x950412DE, 0xDE120495


class MoEntry(tuple):
    """One catalog entry: ``(context, msgid, msgstr, plural)``; ``context`` is ``None`` when
    absent; for plural entries ``msgid``/``msgstr`` are the singular / first form."""

    __slots__ = ()

    def __new__(cls, context, msgid, msgstr, plural):
        return super().__new__(cls, (context, msgid, msgstr, plural))

    context = property(lambda self: self[0])
    msgid = property(lambda self: self[1])
    msgstr = property(lambda self: self[2])
    plural = property(lambda self: self[3])


def _charset(header: bytes) -> str:
    match = re.search(rb"charset=([A-Za-z0-9_.:-]+)", header)
    name = match.group(1).decode("ascii") if match else "utf-8"
    try:
        "".encode(name)
    except LookupError:
        return "utf-8"
    return name


def read_mo(path: str) -> list[MoEntry]:
    """Entries of one ``.mo`` file (header excluded), decoded with the charset its header names.
    Raises ``ValueError`` on a file that is not a well-formed catalog."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        raise ValueError(f"{path}: {len(data)} bytes; expected a .mo file (at least a 28-byte header)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (_MAGIC_LE, _MAGIC_BE):
        raise ValueError(f"{path}: magic {magic:#x}; expected {_MAGIC_LE:#x} (a .mo file)")
    end = "<" if magic == _MAGIC_LE else ">"
    revision, count, orig_at, trans_at = struct.unpack(end + "4I", data[4:20])
    if revision >> 16 > 1:
        raise ValueError(f"{path}: major revision {revision >> 16}; expected 0 or 1")

    def table(at: int) -> list[bytes]:
        if at + 8 * count > len(data):
            raise ValueError(f"{path}: string table at {at} of {count} entries runs past the file ({len(data)} bytes)")
        out = []
        for i in range(count):
            length, offset = struct.unpack(end + "2I", data[at + 8 * i: at + 8 * i + 8])
            if offset + length > len(data):
                raise ValueError(f"{path}: string {i} at {offset}+{length} runs past the file ({len(data)} bytes)")
            out.append(data[offset: offset + length])
        return out

    originals, translations = table(orig_at), table(trans_at)
    charset = next((_charset(t) for o, t in zip(originals, translations) if o == b""), "utf-8")
    entries = []
    for raw_id, raw_str in zip(originals, translations):
        if raw_id == b"":
            continue
        try:
            msgid, msgstr = raw_id.decode(charset), raw_str.decode(charset)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: an entry is not valid {charset} ({e.reason})") from None
        context = None
        if "\x04" in msgid:
            context, msgid = msgid.split("\x04", 1)
        plural = "\x00" in msgid
        entries.append(MoEntry(context, msgid.split("\x00")[0], msgstr.split("\x00")[0], plural))
    return entries


def catalog_paths(dirs: str | Sequence[str], lang: str) -> dict[str, list[str]]:
    """``{domain: [paths]}`` of the ``<dir>/<lang>/LC_MESSAGES/*.mo`` files (dirs: a list or a
    comma-separated string; missing dirs are ignored), paths sorted."""
    if isinstance(dirs, str):
        dirs = [d for d in dirs.split(",") if d]
    out: dict[str, list[str]] = {}
    for d in dirs:
        for path in sorted(globlib.glob(os.path.join(os.path.expanduser(d), lang, "LC_MESSAGES", "*.mo"))):
            out.setdefault(os.path.basename(path)[:-3], []).append(path)
    return out


_PLACEHOLDER = re.compile(
    r"%%"                                                  # a literal percent (text, not a placeholder)
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)[-+#0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"        # Python %(name)s
    r"|%(?:\d+\$)?[-+#0]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcspn]"  # printf
    r"|%\d+"                                               # Qt %1
    r"|\{[A-Za-z0-9_]*(?::[^{}]*)?\}")                     # {0} {name} {} {0:d}
_POSITION = re.compile(r"^%\d+\$")


def placeholders(text: str) -> Counter:
    """The multiset of placeholders in ``text``, positional prefixes removed (``%2$s`` -> ``%s``)."""
    found = (m.group(0) for m in _PLACEHOLDER.finditer(text))
    return Counter(_POSITION.sub("%", p) for p in found if p != "%%")


_SOURCE_MARK = re.compile(r"(?<![A-Za-z0-9_&])([_&])(?=[^\W_])(?![A-Za-z]+;)")


def strip_accelerator(source: str, target: str) -> tuple[str, str]:
    """Remove a mnemonic marker: one ``_``/``&`` at a word start of ``source`` before a letter or
    digit (not an HTML entity like ``&amp;``), and one of the same kind before a letter/digit in
    ``target``; in such labels ``__``/``&&`` (escaped markers) become single characters."""
    marks = _SOURCE_MARK.findall(source.replace("__", "").replace("&&", ""))
    if len(marks) == 1:
        char = marks[0]
        source = _unescape(_SOURCE_MARK.sub(lambda m: "" if m.group(1) == char else m.group(0), _mask(source, char),
                                            count=1), char)
        target = _unescape(re.sub(re.escape(char) + r"(?=[^\W_])", "", _mask(target, char), count=1), char)
    return source, target


_ESCAPED = "\x00"
_BAR_CONTEXT = re.compile(r"^\|[^|\s]*\|(?=\S)")  # GnuPG's in-msgid context "|FILE|read from FILE"


def _mask(text: str, char: str) -> str:
    return text.replace(char * 2, _ESCAPED)


def _unescape(text: str, char: str) -> str:
    return text.replace(_ESCAPED, char)


def clean_pair(source: str, target: str, *, min_chars: int = 3, max_chars: int = 100) -> tuple[str, str] | None:
    """The cleaned (source, target) or ``None`` if the pair is dropped (see the module docstring)."""
    if not source or not target or any(c in s for s in (source, target) for c in "\n\r\t\x00"):
        return None
    if placeholders(source) != placeholders(target):
        return None
    if _BAR_CONTEXT.match(source):
        source, target = _BAR_CONTEXT.sub("", source), _BAR_CONTEXT.sub("", target)
    source, target = strip_accelerator(source, target)
    source, target = source.strip(), target.strip()
    if source == target or not all(min_chars <= len(s) <= max_chars for s in (source, target)):
        return None
    return source, target


def _catalog(paths: Iterable[str], plurals: str) -> dict[tuple, str]:
    """``{(context, msgid): msgstr}`` of readable files; malformed ones warned about and skipped."""
    out = {}
    for path in paths:
        try:
            entries = read_mo(path)
        except (OSError, ValueError) as e:
            reason = str(e) if isinstance(e, ValueError) else f"{path}: {e}"
            warnings.warn(f"skipping malformed gettext catalog: {reason}", stacklevel=3)
            continue
        for e in entries:
            if e.msgstr and not (e.plural and plurals == "skip"):
                out.setdefault((e.context, e.msgid), e.msgstr)
    return out


def gettext_pairs(src_lang: str = "en", tgt_lang: str = "de", *, dirs: str | Sequence[str] = DEFAULT_DIRS,
                  min_chars: int = 3, max_chars: int = 100, plurals: str = "singular") -> list[tuple[str, str]]:
    """Sorted unique (source, target) pairs of every domain both languages have catalogs for
    ("en" is the msgid side and needs none). Raises ``ValueError`` if no catalog is found."""
    if plurals not in ("singular", "skip"):
        raise ValueError(f"data.gettext_plurals: {plurals!r}; expected one of ('singular', 'skip')")
    if src_lang == tgt_lang:
        raise ValueError(f"data.tgt_lang: {tgt_lang!r}; expected a language other than data.src_lang")
    langs = [lang for lang in (src_lang, tgt_lang) if lang != "en"]
    found = {lang: catalog_paths(dirs, lang) for lang in langs}
    for lang in langs:
        if not found[lang]:
            raise ValueError(f"data.tgt_lang: {lang!r}; expected a language with gettext catalogs "
                             f"(<dir>/{lang}/LC_MESSAGES/*.mo) under data.gettext_dirs={dirs!r}"
                             if lang == tgt_lang else
                             f"data.src_lang: {lang!r}; expected a language with gettext catalogs "
                             f"(<dir>/{lang}/LC_MESSAGES/*.mo) under data.gettext_dirs={dirs!r}")
    domains = sorted(set.intersection(*(set(found[lang]) for lang in langs)))
    pairs = set()
    for domain in domains:
        side = {lang: _catalog(found[lang][domain], plurals) for lang in langs}
        for key in sorted(set.intersection(*(set(c) for c in side.values())), key=repr):
            text = {lang: side[lang][key] for lang in langs}
            text["en"] = key[1]
            pair = clean_pair(text[src_lang], text[tgt_lang], min_chars=min_chars, max_chars=max_chars)
            if pair is not None:
                pairs.add(pair)
    return sorted(pairs)
