"""Tiny, randomly initialised Stable Diffusion pipelines saved to disk, for fast diffusers tests.

Every part is a real diffusers / transformers class with the smallest config that still runs:
UNet2DConditionModel and AutoencoderKL with 32/64 channels (the VAE scales by 2, so a 64 px image
is a 32 x 32 latent), a 2-layer CLIP text encoder, a real byte-level BPE ``CLIPTokenizer`` built
from a small vocabulary and a DDIM scheduler, as SD 1.5 (plain and inpainting UNet) and SDXL
(two text encoders) pipelines, plus a ControlNet and an IP-Adapter (a CLIP vision encoder and
adapter weights in the layout ``load_ip_adapter`` reads). The folders are what
``save_pretrained`` writes, so a tool under test loads them exactly as it loads a downloaded model.
The models are random: outputs are noise, but shapes, determinism and the data flow are real.

Usage::

    paths = build_tiny_models(tmp_path)  # TinyModels(base=..., inpaint=..., controlnet=..., ip_adapter=..., sdxl=...)
    request.parameters["model"] = str(paths.base)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CROSS_ATTENTION_DIM = 32
IMAGE_EMBED_DIM = 32  # IP-Adapter: the CLIP vision projection size
IP_ADAPTER_WEIGHT = "ip_adapter.safetensors"

# Words the tiny tokenizer knows whole; everything else falls back to single byte-level characters.
WORDS = ("a", "photo", "of", "hand", "face", "person", "natural", "light", "blurry", "extra", "fingers",
         "sharp", "detail", "skin", "background", "the", "with", "and", "repair", "keep")


@dataclass(frozen=True)
class TinyModels:
    base: Path  # a StableDiffusionPipeline folder (4-channel UNet: img2img, and inpaint by latent blending)
    inpaint: Path  # a StableDiffusionInpaintPipeline folder (9-channel inpainting UNet)
    controlnet: Path  # a ControlNetModel folder matching both
    ip_adapter: Path  # a folder with ip_adapter.safetensors and image_encoder/
    sdxl: Path  # a StableDiffusionXLPipeline folder (two text encoders, text_time conditioning)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, which CLIP's BPE works on."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_tokenizer():
    """A CLIPTokenizer that really tokenizes: every byte, each byte at a word's end, and WORDS whole.

    transformers 5 ignores ``vocab_file=`` / ``merges_file=`` on ``CLIPTokenizer(...)`` and silently
    builds a 3-token vocabulary, so the vocabulary and merges are passed as objects.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        # merge left to right: "p"+"h" -> "ph", "ph"+"o" -> "pho", ..., last merge makes "photo</w>"
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            if pair not in merges:
                merges.append(pair)
            symbols = ["".join(pair)] + symbols[2:]
            vocab.setdefault(symbols[0], len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=CROSS_ATTENTION_DIM,
                            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            max_position_embeddings=77, vocab_size=vocab_size, layer_norm_eps=1e-5)
    return CLIPTextModel(config)


def _unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, sample_size=64)


def _sdxl(tokenizer, scheduler, vae):
    """SDXL's layout in miniature: two CLIP text encoders (the second with a projection) whose hidden
    states are concatenated (32 + 32 = the UNet's cross-attention width), and the size/crop
    conditioning: 6 time ids x 8 + the pooled 32-d projection = 80 inputs."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                            vocab_size=len(tokenizer), projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)
    return StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=CLIPTextModel(config),
                                     text_encoder_2=CLIPTextModelWithProjection(config), tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, scheduler=scheduler, image_encoder=None,
                                     feature_extractor=None, force_zeros_for_empty_prompt=True)


def _controlnet():
    import torch
    from diffusers import ControlNetModel

    model = ControlNetModel(block_out_channels=(32, 64), layers_per_block=1, in_channels=4,
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8,
                            conditioning_embedding_out_channels=(16, 32))
    # A fresh ControlNet's output convolutions are zero ("zero convolutions"), so its control image
    # would have no effect at all; give them random weights so the control input matters.
    with torch.no_grad():
        for module in [*model.controlnet_down_blocks, model.controlnet_mid_block,
                       model.controlnet_cond_embedding.conv_out]:
            torch.nn.init.normal_(module.weight, std=1.0)
            torch.nn.init.normal_(module.bias, std=1.0)
    return model


def _ip_adapter(folder: Path, unet) -> None:
    """IP-Adapter weights in the original layout (image_proj.* and ip_adapter.N.to_k_ip/to_v_ip) and a
    tiny CLIP vision encoder in ``image_encoder/``."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
        patch_size=4, projection_dim=IMAGE_EMBED_DIM, num_channels=3))
    encoder.save_pretrained(folder / "image_encoder")
    tokens = 4  # the plain IP-Adapter's image tokens
    tensors = {
        "image_proj.proj.weight": torch.randn(CROSS_ATTENTION_DIM * tokens, IMAGE_EMBED_DIM) * 0.2,
        "image_proj.proj.bias": torch.randn(CROSS_ATTENTION_DIM * tokens) * 0.2,
        "image_proj.norm.weight": torch.ones(CROSS_ATTENTION_DIM),
        "image_proj.norm.bias": torch.zeros(CROSS_ATTENTION_DIM),
    }
    # one key pair per cross-attention layer, numbered 1, 3, 5, ... in the UNet's processor order
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, CROSS_ATTENTION_DIM) * 0.2
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, CROSS_ATTENTION_DIM) * 0.2
        key_id += 2
    save_file(tensors, str(folder / IP_ADAPTER_WEIGHT))


def build_tiny_models(root: Path, seed: int = 0) -> TinyModels:
    """Build, seed and save the tiny models under ``root``; returns their folders."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    root = Path(root)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    ids = tokenizer("a photo of a hand").input_ids
    if len(ids) <= 2:  # only BOS/EOS: the tokenizer silently lost its vocabulary
        raise RuntimeError(f"the tiny tokenizer does not tokenize: {ids}")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    vae, text_encoder = _vae(), _text_encoder(len(tokenizer))
    shared = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                  safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    base_unet = _unet(4)
    StableDiffusionPipeline(unet=base_unet, **shared).save_pretrained(root / "sd-base")
    StableDiffusionInpaintPipeline(unet=_unet(9), **shared).save_pretrained(root / "sd-inpaint")
    _controlnet().save_pretrained(root / "controlnet")
    (root / "ip-adapter").mkdir(parents=True, exist_ok=True)
    _ip_adapter(root / "ip-adapter", base_unet)
    _sdxl(tokenizer, scheduler, vae).save_pretrained(root / "sdxl")
    return TinyModels(base=root / "sd-base", inpaint=root / "sd-inpaint", controlnet=root / "controlnet",
                      ip_adapter=root / "ip-adapter", sdxl=root / "sdxl")
