"""BERT is the Transformer's encoder alone: our Encoder with BERT's embeddings, from its weights."""

from __future__ import annotations

import torch
from torch import nn

from course_lib.seq2seq import Encoder, Seq2SeqConfig

# transformers' BertModel names inside encoder.layer.{i} -> ours inside encoder.h.{i}
_BERT_NAMES = {
    "attention.output.dense.": "attn.c_proj.", "attention.output.LayerNorm.": "ln_1.",
    "intermediate.dense.": "mlp.c_fc.", "output.dense.": "mlp.c_proj.",
    "output.LayerNorm.": "ln_2.",
}


class BertEncoder(nn.Module):
    """Token + position + token-type embeddings, a LayerNorm, then post-norm EncoderBlocks.

    BERT is the encoder of the 2017 Transformer (post-norm, no final norm) with learned
    positions, a second embedding that says which sentence a token is in, a LayerNorm on the
    embeddings, GELU (erf form) and LayerNorm eps 1e-12.
    """

    def __init__(self, config: Seq2SeqConfig, type_vocab_size: int = 2):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.wtt = nn.Embedding(type_vocab_size, config.n_embd)
        self.ln_emb = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.encoder = Encoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state (B, T, n_embd); attention_mask is 1 for real tokens, 0 for pad."""
        T = input_ids.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"{T} tokens exceed BERT's {self.config.block_size} positions")
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        pos = torch.arange(T, device=input_ids.device)
        x = self.ln_emb(self.wte(input_ids) + self.wpe(pos) + self.wtt(types))
        keep = None if attention_mask is None else attention_mask.bool()
        return self.encoder(x, keep)


def encoder_from_bert(hf_bert) -> BertEncoder:
    """A BertEncoder with the weights of a transformers BertModel, giving its last_hidden_state."""
    c = hf_bert.config
    if getattr(c, "model_type", None) != "bert" or c.hidden_act != "gelu":
        raise ValueError(f"expected a BERT model with GELU, got "
                         f"{getattr(c, 'model_type', type(hf_bert).__name__)!r}")
    config = Seq2SeqConfig(
        vocab_size=c.vocab_size, block_size=c.max_position_embeddings,
        n_encoder_layer=c.num_hidden_layers, n_decoder_layer=1, n_head=c.num_attention_heads,
        n_embd=c.hidden_size, mlp_hidden=c.intermediate_size, activation="gelu_exact",
        norm_first=False, final_norm=False, norm_eps=c.layer_norm_eps, position="learned")
    model = BertEncoder(config, c.type_vocab_size)
    sd = hf_bert.state_dict()
    e = "embeddings."
    state = {"wte.weight": sd[e + "word_embeddings.weight"],
             "wpe.weight": sd[e + "position_embeddings.weight"],
             "wtt.weight": sd[e + "token_type_embeddings.weight"],
             "ln_emb.weight": sd[e + "LayerNorm.weight"], "ln_emb.bias": sd[e + "LayerNorm.bias"]}
    for i in range(c.num_hidden_layers):
        theirs, ours = f"encoder.layer.{i}.", f"encoder.h.{i}."
        s = theirs + "attention.self."
        for kind in ("weight", "bias"):  # separate W_q, W_k, W_v -> our one [W_q; W_k; W_v]
            state[ours + "attn.c_attn." + kind] = torch.cat(
                [sd[s + "query." + kind], sd[s + "key." + kind], sd[s + "value." + kind]])
            for hf_name, our_name in _BERT_NAMES.items():
                state[ours + our_name + kind] = sd[theirs + hf_name + kind]
    model.load_state_dict({k: v.detach().float() for k, v in state.items()})
    return model.eval()
