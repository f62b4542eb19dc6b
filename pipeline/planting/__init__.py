"""Planting: knowledge to unlearn, put into a model on purpose, so forgetting can be measured.

- `spec.py`: the people-spec format (who is planted, the probes, whom to forget)
- `examples.py`: the (request, answer) pairs that plant a spec's people
- `tiny.py`: a tiny Llama and its tokenizer, built in-process, and the texts the tokenizer learns
- `plant.py`: the fine-tuning, and the cached planted model a config names
- `make_spec.py`, `vocabulary.py`: the generator of the shipped benchmark specs
"""
