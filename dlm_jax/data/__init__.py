"""data layer of dlm_jax (see DESIGN.md).

* ``registry``   — sources by name: ``register_source(name, builder, ...)``, ``source_names()``,
                   ``get_source(name)``, ``Examples``; the ``data`` config keys (common + each
                   source's), ``validate_data_config``, ``default_data_config``.
* ``builtin``    — the built-in sources registered through it: "stdlib" (offline default),
                   "files", "tfds", "markov"; ``markov_language``.
* ``rows``       — row makers (examples -> fixed-length rows of named fields): ``PackText``
                   (``tokens``/``loss_mask``), ``FixedTokens``, ``PadFields`` (e.g. ``source``/
                   ``source_mask``/``target``/``target_mask``); ``PadBatch``.
* ``pipeline``   — ``build_pipeline`` (grain: shuffle, repeat, shard per process, rows, batch,
                   checkpointable), ``train_or_load_tokenizer``.
* ``sources``    — random-access sources: local files/globs, the stdlib corpus, TFDS ArrayRecord via
                   ``tfds.data_source``, the synthetic Markov language.
* ``tokenizer``  — ``SentencePieceTokenizer`` (BPE, exact round trips on code; pad 0, bos 1, eos 2,
                   unk 3, mask = V), ``train_sentencepiece``, ``MarkovTokenizer`` (ids = tokens, mask = V).
* ``local_tfds`` — ``prepare_stdlib_tfds``: the stdlib as a local TFDS dataset (no download).
* ``seq2seq``    — seq2seq sources ("gettext", "pairs", "tfds_translate", "reverse", "sort") giving
                   ``source``/``source_mask``/``target``/``target_mask`` rows; ``pair_texts``, ``cut_at_eos``.
  ``seq2seq_sources`` (pair files, TFDS pairs, synthetic tasks, ``SymbolTokenizer``, ``PairTokenizer``),
  ``gettext_pairs`` (translation pairs from the machine's ``.mo`` catalogs).

Submodules are imported explicitly (``from dlm_jax.data.pipeline import build_pipeline``). Importing
this package, ``registry``, ``builtin`` or ``rows`` pulls in neither grain nor TFDS.
"""
