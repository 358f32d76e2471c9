"""The gettext reader on .mo files this test writes itself (the binary format, both byte orders, a
latin-1 catalog): exact pair lists after context, plural, placeholder, accelerator, duplicate,
multi-line, length and identical filters; malformed files skipped with a warning naming them;
the pivot join of two non-English catalogs; the hash split; the too-few-pairs error."""

import struct
import warnings

import pytest

from dlm_jax.data.gettext_pairs import clean_pair, gettext_pairs, placeholders, read_mo, strip_accelerator
from dlm_jax.data.seq2seq import pair_texts
from dlm_jax.data.seq2seq_sources import split_of, split_pairs

HEADER = b"Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def write_mo(path, entries, *, header=HEADER, big_endian=False):
    """The GNU .mo format: magic, revision 0, N, offsets of the (length, offset) tables of the
    originals (sorted) and translations, no hash table, then the NUL-terminated strings."""
    entries = sorted([(b"", header)] + [(k if isinstance(k, bytes) else k.encode(), v if isinstance(v, bytes)
                                          else v.encode()) for k, v in entries])
    end = ">" if big_endian else "<"
    n = len(entries)
    orig_at, trans_at = 28, 28 + 8 * n
    blob, tables = b"", [[], []]
    base = 28 + 16 * n
    for side in (0, 1):
        for entry in entries:
            tables[side].append((len(entry[side]), base + len(blob)))
            blob += entry[side] + b"\0"
    head = struct.pack(end + "7I", 0x950412DE, 0, n, orig_at, trans_at, 0, 0)
    body = b"".join(struct.pack(end + "2I", *t) for t in tables[0] + tables[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + body + blob)


APP_DE = [
    ("Open", "Öffnen"),
    ("menu\x04File", "Datei"),                                  # context: stripped
    ("%d file\x00%d files", "%d Datei\x00%d Dateien"),          # plural: singular pair
    ("Copy %s to %s", "%2$s nach %1$s kopieren"),               # positional placeholders: same multiset
    ("Deleted %d items", "Elemente gelöscht"),                  # placeholder missing: dropped
    ("Progress: %d%%", "Fortschritt: %d %%"),                   # %% is text
    ("_Save As", "Speichern _unter"),                           # accelerators
    ("&Quit", "&Beenden"),
    ("Line one\nLine two", "Zeile eins\nZeile zwei"),           # multi-line: dropped
    ("Linux", "Linux"),                                         # identical: dropped
    ("OK", "OK"),
    ("Untranslated", ""),                                       # untranslated: dropped
    ("x" * 101, "y" * 101),                                     # too long: dropped
    ("Hi", "Hallo"),                                            # source too short: dropped
    ("|FILE|read options from FILE", "|DATEI|Optionen aus DATEI lesen"),  # GnuPG in-text context
    ("LC_ALL is set", "LC_ALL ist gesetzt"),                    # identifier, not an accelerator
    ("Print {0} pages", "{0} Seiten drucken"),
]
TOOL_DE = [
    ("Open", "Öffnen"),                                         # duplicate of app's pair: kept once
    ("Close", "Schließen"),
    ("Print {0} pages", "Drucke {1} Seiten"),                   # brace mismatch: dropped
    ("file\x04Close", "Zumachen"),                              # same msgid, other context and text: kept
]
EXPECTED = sorted([
    ("%d file", "%d Datei"), ("Close", "Schließen"), ("Close", "Zumachen"),
    ("Copy %s to %s", "%2$s nach %1$s kopieren"),
    ("File", "Datei"), ("LC_ALL is set", "LC_ALL ist gesetzt"), ("Open", "Öffnen"),
    ("Print {0} pages", "{0} Seiten drucken"), ("Progress: %d%%", "Fortschritt: %d %%"), ("Quit", "Beenden"),
    ("Save As", "Speichern unter"), ("read options from FILE", "Optionen aus DATEI lesen"),
])


@pytest.fixture(scope="module")
def locale_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("locale")
    write_mo(root / "a" / "de" / "LC_MESSAGES" / "app.mo", APP_DE)
    write_mo(root / "b" / "de" / "LC_MESSAGES" / "tool.mo", TOOL_DE, big_endian=True)
    latin = [("Size", "Größe".encode("latin-1"))]
    write_mo(root / "b" / "de" / "LC_MESSAGES" / "old.mo", latin,
             header=b"Content-Type: text/plain; charset=ISO-8859-1\n")
    (root / "b" / "de" / "LC_MESSAGES" / "broken.mo").write_bytes(b"\x00" * 40)         # bad magic
    good = (root / "a" / "de" / "LC_MESSAGES" / "app.mo").read_bytes()
    (root / "a" / "de" / "LC_MESSAGES" / "cut.mo").write_bytes(good[:60])              # truncated tables
    write_mo(root / "a" / "fr" / "LC_MESSAGES" / "app.mo", [("Open", "Ouvrir"), ("menu\x04File", "Fichier"),
                                                            ("Close", "Fermer")])
    return f"{root / 'a'},{root / 'b'},{root / 'missing'}"


def _read(dirs, *args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = gettext_pairs(*args, dirs=dirs, **kw)
    return pairs, sorted(str(w.message) for w in caught)


def test_read_mo_entries(locale_dirs):
    path = locale_dirs.split(",")[0] + "/de/LC_MESSAGES/app.mo"
    entries = {(e.context, e.msgid): (e.msgstr, e.plural) for e in read_mo(path)}
    assert len(entries) == len(APP_DE)  # the header is not an entry
    assert entries[("menu", "File")] == ("Datei", False)
    assert entries[(None, "%d file")] == ("%d Datei", True)
    assert entries[(None, "Untranslated")] == ("", False)
    big = read_mo(locale_dirs.split(",")[1] + "/de/LC_MESSAGES/tool.mo")
    assert sorted((e.context or "", e.msgid, e.msgstr) for e in big) == sorted(
        [("", "Open", "Öffnen"), ("", "Close", "Schließen"), ("", "Print {0} pages", "Drucke {1} Seiten"),
         ("file", "Close", "Zumachen")])
    assert [tuple(e) for e in read_mo(locale_dirs.split(",")[1] + "/de/LC_MESSAGES/old.mo")] == [
        (None, "Size", "Größe", False)]


def test_exact_pairs_and_malformed_files_warned(locale_dirs):
    pairs, warned = _read(locale_dirs)
    assert pairs == sorted(EXPECTED + [("Size", "Größe")])
    a, b = locale_dirs.split(",")[:2]
    assert warned == [  # sorted: a/... first
        f"skipping malformed gettext catalog: {a}/de/LC_MESSAGES/cut.mo: string table at 28 of 18 entries runs past "
        "the file (60 bytes)",
        f"skipping malformed gettext catalog: {b}/de/LC_MESSAGES/broken.mo: magic 0x0; expected 0x950412de "
        "(a .mo file)"]
    skip, _ = _read(locale_dirs, plurals="skip")
    assert skip == [p for p in pairs if p[0] != "%d file"]
    short, _ = _read(locale_dirs, min_chars=5, max_chars=8)
    assert short == [p for p in pairs if all(5 <= len(s) <= 8 for s in p)] == [
        ("%d file", "%d Datei"), ("Close", "Zumachen")]
    reverse, _ = _read(locale_dirs, "de", "en")
    assert sorted((t, s) for s, t in reverse) == pairs


def test_pivot_join_of_two_catalogs(locale_dirs):
    pairs, _ = _read(locale_dirs, "fr", "de")
    # joined on (context, msgid) within the domain "app" ("Close" is only in tool.mo for German)
    assert pairs == [("Fichier", "Datei"), ("Ouvrir", "Öffnen")]


def test_filters_one_by_one():
    assert placeholders("%2$s of %1$d, %% %(name)s {0} {} %1 %5.2f %ld") == {
        "%s": 1, "%d": 1, "%(name)s": 1, "{0}": 1, "{}": 1, "%1": 1, "%5.2f": 1, "%ld": 1}
    assert strip_accelerator("_Open File", "Ö_ffnen") == ("Open File", "Öffnen")
    assert strip_accelerator("Tom &amp; Jerry", "Tom &amp; Jerry") == ("Tom &amp; Jerry", "Tom &amp; Jerry")
    assert strip_accelerator("_Save __all", "__Alle _speichern") == ("Save _all", "_Alle speichern")  # escaped
    assert strip_accelerator("call __init__", "__init__ aufrufen") == ("call __init__", "__init__ aufrufen")
    assert strip_accelerator("Drag & Drop", "Ziehen & Ablegen") == ("Drag & Drop", "Ziehen & Ablegen")
    assert clean_pair("  Open  ", " Öffnen ") == ("Open", "Öffnen")
    assert clean_pair("A\tB", "A B") is None and clean_pair("abc", "") is None
    assert clean_pair("%s and %d", "%d und %s") == ("%s and %d", "%d und %s")
    assert clean_pair("%s and %d", "%s und %s") is None


def test_split_is_deterministic_by_source_hash():
    # u = first 8 bytes of sha256 as a fraction: Open 0.926, Close 0.491, Save As 0.0332, File 0.3125
    words = ("Open", "Close", "Save As", "File")
    assert [split_of(s, 0.05, 0.05) for s in words] == ["train", "train", "validation", "train"]
    assert [split_of(s, 0.3, 0.2) for s in words] == ["train", "test", "validation", "test"]
    assert [split_of(s, 0.0, 0.0) for s in words] == ["train"] * 4
    sources = [f"message number {i}" for i in range(4000)]
    splits = [split_of(s, 0.1, 0.2) for s in sources]
    counts = {k: splits.count(k) for k in ("train", "validation", "test")}
    assert abs(counts["validation"] - 400) < 60 and abs(counts["test"] - 800) < 80  # ~4 sd of a binomial
    pairs = [(s, str(i)) for i, s in enumerate(sources)]
    parts = {k: split_pairs(pairs, k, 0.1, 0.2) for k in ("train", "validation", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(pairs) and len(parts["test"]) == counts["test"]
    assert split_pairs(pairs[::-1], "test", 0.1, 0.2) == parts["test"][::-1]  # membership ignores order
    # copies of one source (other contexts/translations) always share a split
    assert split_pairs([("x y", "a"), ("x y", "b")], "train", 0.0, 0.0) == [("x y", "a"), ("x y", "b")]


@pytest.mark.filterwarnings("ignore:skipping malformed gettext catalog")
def test_source_errors(locale_dirs):
    data = {"source": "gettext", "gettext_dirs": locale_dirs}
    with pytest.raises(ValueError, match=r"^gettext pairs en->de under data.gettext_dirs='.*': 13; expected >= "
                                         r"data.gettext_min_pairs=1000; point at a file \(data.source='pairs', "):
        pair_texts(data, "train")
    with pytest.raises(ValueError, match=r"^data.tgt_lang: 'xx'; expected a language with gettext catalogs"):
        pair_texts({**data, "tgt_lang": "xx"}, "train")
    with pytest.raises(ValueError, match=r"^data.gettext_plurals: 'all'; expected one of \('singular', 'skip'\)$"):
        pair_texts({**data, "gettext_plurals": "all"})
    with pytest.raises(ValueError, match=r"^data.test_fraction: 0.96; expected a finite number in \[0.0, 0.95\)$"):
        pair_texts({**data, "test_fraction": 0.96})
    everything = sorted(EXPECTED + [("Size", "Größe")])
    parts = [pair_texts({**data, "gettext_min_pairs": 1}, s) for s in ("train", "validation", "test")]
    assert sorted(sum(parts, [])) == everything
    assert parts[1] == [("Save As", "Speichern unter")]  # u = 0.0332 < 0.05
