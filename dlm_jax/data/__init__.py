"""data layer of dlm_jax (see DESIGN.md).

* ``tokenizer``  — ``SentencePieceTokenizer`` (BPE, exact round trips on code; pad 0, bos 1, eos 2,
                   unk 3, mask = V), ``train_sentencepiece``, ``MarkovTokenizer`` (ids = tokens, mask = V).
* ``sources``    — random-access sources: local files/globs, the stdlib corpus (offline default),
                   TFDS ArrayRecord via ``tfds.data_source``, the synthetic Markov language.
* ``pipeline``   — ``build_pipeline`` (grain: shuffle, tokenize, EOS-pack, batch, shard per process,
                   checkpointable), ``train_or_load_tokenizer``, ``default_data_config``, config keys.
* ``local_tfds`` — ``prepare_stdlib_tfds``: the stdlib as a local TFDS dataset (no download).

Submodules are imported explicitly (``from dlm_jax.data.pipeline import build_pipeline``) so that
importing this package pulls in neither grain nor TFDS.
"""
