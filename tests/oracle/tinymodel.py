"""Shared tiny-model generator for the oracle tests.

`make_tiny_llama(dir)` writes a Hugging Face LlamaForCausalLM checkpoint folder: config.json,
model.safetensors (random weights from a fixed seed), and a small byte-level BPE tokenizer
trained with `tokenizers` (Digits + ByteLevel pre-tokenizer) with a chat template.

Default shapes: hidden 256 and heads of 64 (attention matrices fit the 256-blocks of the
K-quants), intermediate 640 (ffn_down rows are 640 = 20 x 32, not a multiple of 256, so the
K-quant mixes must fall back there), GQA with 4 query heads per 2 KV heads, 4 layers.
"""
import json
import pathlib

import numpy as np

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Small language models run on phones, laptops and microcontrollers.",
    "llama.cpp loads GGUF files; slmpack writes them in 2, 4, 5, 6 and 8 bits.",
    "Hello world! How are you today? I am fine, thank you.",
    "def add(a, b):\n    return a + b\n",
    "Paris is the capital of France. Berlin is the capital of Germany.",
] * 20

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(vocab_size=400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def hf_tensor_shapes(cfg):
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], h)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (nh * hd, h)
        shapes[p + "self_attn.k_proj.weight"] = (nkv * hd, h)
        shapes[p + "self_attn.v_proj.weight"] = (nkv * hd, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, nh * hd)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (ff, h)
        shapes[p + "mlp.up_proj.weight"] = (ff, h)
        shapes[p + "mlp.down_proj.weight"] = (h, ff)
    shapes["model.norm.weight"] = (h,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (cfg["vocab_size"], h)
    return shapes


def make_tiny_llama(
    path,
    *,
    hidden=256,
    heads=4,
    kv_heads=2,
    intermediate=640,
    layers=4,
    tied=True,
    dtype="float16",
    seed=1234,
    vocab_size=400,
):
    """Write the checkpoint folder; returns (path, config dict, {name: numpy array})."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size)
    tok.save(str(path / "tokenizer.json"))
    n_vocab = tok.get_vocab_size()
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": False,
                "add_eos_token": False,
                "bos_token": "<|endoftext|>",
                "eos_token": "<|im_end|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 512,
                "tokenizer_class": "GPT2Tokenizer",
            }
        )
    )
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": n_vocab,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": dtype,
    }
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in hf_tensor_shapes(cfg).items():
        if len(shape) == 1:
            a = 1.0 + 0.05 * rng.standard_normal(shape)
        else:
            a = 0.05 * rng.standard_normal(shape)
        tensors[name] = a.astype(np.float16 if dtype == "float16" else np.float32)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path, cfg, tensors


def permute_like_llama_cpp(w, n_head):
    """llama.cpp's converter permutation of Q/K rows (per head: interleave the two halves)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
