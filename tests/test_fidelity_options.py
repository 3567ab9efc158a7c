"""The fidelity suite's ``--set KEY=VALUE`` parser: JSON where the value is JSON, the bare word otherwise
(a paradigm named "fast" once failed as malformed JSON because it starts with an "f")."""
from benchmarks.fidelity.run import parse_options


def test_values_parse_as_json_or_stay_words():
    got = parse_options(["lr_g=0.01", "paradigm=fast", "flip=false", "noise_magnitudes=[1, 2]", "text_encoder=hash",
                         "epochs=-1", "name=a=b"])
    assert got == {"lr_g": 0.01, "paradigm": "fast", "flip": False, "noise_magnitudes": [1, 2],
                   "text_encoder": "hash", "epochs": -1, "name": "a=b"}
