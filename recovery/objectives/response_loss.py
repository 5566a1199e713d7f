"""The response-token loss of `sft` and `distill`, computed without the full-vocabulary logits of the batch.

The decoder body runs once over the batch and returns hidden states, not logits. Only the hidden states that
predict a response token (label != -100, after the causal shift) go on to the output head, in chunks of
`position_chunk` positions: each chunk's logits are computed, turned into the chunk's summed negative
log-likelihood (and, with a teacher, the summed forward KL to the teacher's distribution at the same positions)
and dropped. Each chunk runs under `torch.utils.checkpoint`, so its logits are not kept for the backward pass but
recomputed there, one chunk at a time: the largest vocabulary-sized tensors alive at once are a few of
`position_chunk × vocab` float32 values, whatever the batch size, row length or prompt length. The logged metrics
(mean token accuracy, entropy) are read off the same chunks without gradient, so the vocabulary is projected once
per response position in the forward pass, and once more in the backward.

With a teacher and a temperature T other than 1, the KL is between both distributions softened by T (logits / T)
and multiplied by T² (Hinton et al., arXiv 1503.02531): the softened KL's gradient with respect to the logits
shrinks as 1/T², and the factor keeps its size, and its balance against the NLL term (always at temperature 1),
about the same whatever T. T = 1 computes exactly what it did before the temperature existed.

The loss equals the one computed from the full logits (cross-entropy summed over the response tokens, divided by
their count or by the Trainer's `num_items_in_batch`); `tests/recovery/test_response_loss.py` checks the loss and
the LoRA gradients against it. The scorer bounds its memory the same way (`paser.selection.degradation`,
`DegradationConfig.position_chunk`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as functional
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from paser.recovery.token_weights import RESPONSE_JSD, ResponseJsdCollator, normalised_weights

IGNORE_INDEX = -100
# Config fields through which some architectures transform the logits after the output head (scale, soft-cap):
# the chunked head does not apply them, so such a model is refused rather than trained on another loss.
LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


@dataclasses.dataclass
class ResponseTotals:
    """Sums over one batch's response tokens (the positions whose label is not -100, after the causal shift).

    `nll`: summed negative log-likelihood of the labels (nats; carries the gradient); `kl`: summed forward
    KL(teacher ‖ student) over the vocabulary (nats; carries the gradient), None without a teacher; `entropy`:
    summed entropy of the student's next-token distribution (nats, no gradient); `correct`: positions whose label
    is the student's most likely token; `tokens`: the response positions.
    """

    nll: Tensor
    kl: Tensor | None
    entropy: Tensor
    correct: Tensor
    tokens: Tensor


def causal_lm_of(model: Any) -> Any:
    """The transformers causal LM inside `model`: a peft model's base model (LoRA layers in place), else `model`."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def check_plain_head(causal_lm: Any) -> None:
    """Refuse (ValueError naming the setting) a model whose logits are not the output head applied to the last
    hidden state: a logit scale or soft-cap in its config would be missing from the chunked loss."""
    config = causal_lm.config.get_text_config()
    transforms = [name for name in LOGIT_TRANSFORMS if getattr(config, name, None) not in (None, 1, 1.0)]
    if transforms:
        raise ValueError(
            f"{type(causal_lm).__name__} transforms its logits after the output head ({', '.join(transforms)}); "
            "the chunked response loss does not apply that and refuses this model"
        )


def response_hidden_states(causal_lm: Any, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """(hidden states, targets): the decoder body's last hidden states at the positions that predict a response
    token, shape (positions, hidden), and those tokens, shape (positions,).

    Every input except `labels` goes to the body (padding-free batches bring their position ids and sequence
    boundaries); position t predicts the label at t + 1.
    """
    labels = inputs["labels"]
    body_inputs = {key: value for key, value in inputs.items() if key != "labels"}
    output = causal_lm.get_decoder()(**body_inputs, use_cache=False)
    hidden = output.last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    response = targets != IGNORE_INDEX
    return hidden[response], targets[response]


def _chunk_totals(
    head: torch.nn.Module,
    hidden: Tensor,
    targets: Tensor,
    teacher_head: torch.nn.Module | None,
    teacher_hidden: Tensor | None,
    weights: Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(nll, kl, entropy, correct) summed over one chunk of positions, nll and kl weighted per position by
    `weights` when given; kl is 0 without a teacher, else taken at `temperature` (times its square)."""
    logits = head(hidden).float()
    log_probs = logits.log_softmax(dim=-1)
    target_log_probs = log_probs.gather(1, targets.unsqueeze(1))
    nll = -target_log_probs.sum() if weights is None else -(target_log_probs.squeeze(1) * weights).sum()
    if teacher_head is None:
        kl = nll.new_zeros(())
    else:
        with torch.no_grad():
            teacher_logits = teacher_head(teacher_hidden).float()
        softened = temperature != 1.0
        student = (logits / temperature).log_softmax(dim=-1) if softened else log_probs
        teacher_log_probs = (teacher_logits / temperature if softened else teacher_logits).log_softmax(dim=-1)
        # sum_v p_teacher(v) (log p_teacher(v) - log p_student(v)): TRL GKD's generalised JSD at beta = 0.
        if weights is None:
            kl = functional.kl_div(student, teacher_log_probs, reduction="sum", log_target=True)
        else:
            per_position = functional.kl_div(student, teacher_log_probs, reduction="none", log_target=True)
            kl = (per_position.sum(dim=-1) * weights).sum()
        if softened:
            kl = kl * temperature**2
    with torch.no_grad():
        probabilities = log_probs.exp()
        entropy = -probabilities.mul_(log_probs).sum()
        correct = (logits.argmax(dim=-1) == targets).sum()
    return nll, kl, entropy, correct


def response_totals(
    head: torch.nn.Module,
    hidden: Tensor,
    targets: Tensor,
    *,
    position_chunk: int,
    teacher_head: torch.nn.Module | None = None,
    teacher_hidden: Tensor | None = None,
    weights: Tensor | None = None,
    temperature: float = 1.0,
) -> ResponseTotals:
    """The batch's `ResponseTotals` from the hidden states at its response positions, `position_chunk` positions
    at a time through `head` (and, for the KL, the teacher's hidden states at the same positions through
    `teacher_head`, both distributions softened by `temperature` and the KL multiplied by its square); with
    `weights` (one per position, `paser.recovery.token_weights`), `nll` and `kl` are the weighted sums, and a
    position of weight 0 adds nothing to them nor to their gradient. Refuses a `position_chunk` below 1, a
    `temperature` not above 0 and teacher hidden states or weights of another position count."""
    if position_chunk < 1:
        raise ValueError(f"position_chunk must be >= 1, got {position_chunk}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if teacher_head is not None and (teacher_hidden is None or teacher_hidden.shape[0] != hidden.shape[0]):
        raise ValueError("the teacher's hidden states must cover the same response positions as the student's")
    if weights is not None and weights.shape != (hidden.shape[0],):
        raise ValueError(
            f"{tuple(weights.shape)} token weights for {hidden.shape[0]} response positions; the per-token JSD is "
            "not aligned with the batch"
        )
    # A batch without response tokens still gives a loss connected to the model, so backward() works on it.
    nll = hidden.sum() * 0.0
    kl = nll.clone() if teacher_head is not None else None
    entropy = torch.zeros((), device=hidden.device)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], position_chunk):
        chunk = slice(start, start + position_chunk)
        chunk_nll, chunk_kl, chunk_entropy, chunk_correct = checkpoint(
            _chunk_totals,
            head,
            hidden[chunk],
            targets[chunk],
            teacher_head,
            None if teacher_hidden is None else teacher_hidden[chunk],
            None if weights is None else weights[chunk],
            temperature,
            use_reentrant=False,
        )
        nll = nll + chunk_nll
        if kl is not None:
            kl = kl + chunk_kl
        entropy = entropy + chunk_entropy
        correct = correct + chunk_correct
    tokens = torch.tensor(hidden.shape[0], device=hidden.device)
    return ResponseTotals(nll=nll, kl=kl, entropy=entropy, correct=correct, tokens=tokens)


def _batch_tokens(inputs: dict[str, Any]) -> tuple[Tensor, int]:
    """(real tokens, positions) of a batch: the attention mask's ones, or every position of a padding-free batch."""
    positions = inputs["input_ids"].numel()
    mask = inputs.get("attention_mask")
    real = mask.sum() if mask is not None else torch.tensor(positions, device=inputs["input_ids"].device)
    return real, positions


class ChunkedResponseLoss:
    """`compute_loss` for a TRL `SFTTrainer` (or a subclass) from `response_totals`, mixed in before it.

    The loss is `(kl_weight × KL + nll_weight × NLL) / count`, the count being the Trainer's `num_items_in_batch`
    (response tokens over the accumulated batch and every process) when given, else this batch's response tokens;
    as in `SFTTrainer.compute_loss`, it is multiplied by the process count when the Trainer averages tokens across
    devices. With a `loss_teacher()`, the teacher's hidden states at the same positions come from its own body,
    without gradient, and the KL is taken at `temperature` (`response_totals`). With `token_weighting` `jsd` or
    `top_fraction`, the rows carry their per-token JSD
    (`response_jsd`, `paser.recovery.token_weights`), and NLL and KL are sums weighted per response token by
    `normalised_weights` (mean 1 over the batch's response tokens, so the loss keeps its scale); with `none` the
    loss is computed exactly as without weighting. Logs `mean_token_accuracy` and `entropy` (with a teacher also
    `kl` and `nll`), each per response token, and the running `num_tokens`; counts in `forwarded` what training
    forwarded, summed over processes, as `paser.recovery.flops.recovery_compute` takes it: `trained` (real
    tokens), `padding`, `loss_tokens` (response tokens) and `teacher_forward` (the tokens the teacher forwarded, 0
    without one).
    """

    def __init__(
        self,
        *args: Any,
        position_chunk: int,
        nll_weight: float = 1.0,
        kl_weight: float = 0.0,
        token_weighting: str = "none",
        token_weight_fraction: float = 1.0,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self.position_chunk, self.nll_weight, self.kl_weight = position_chunk, nll_weight, kl_weight
        # Not `temperature`: GKDTrainer sets that attribute from its own config (its sampling temperature).
        self.kl_temperature = temperature
        self.token_weighting, self.token_weight_fraction = token_weighting, token_weight_fraction
        self.forwarded = {"trained": 0, "padding": 0, "loss_tokens": 0, "teacher_forward": 0}
        super().__init__(*args, **kwargs)
        if token_weighting != "none":
            self.data_collator = ResponseJsdCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.token_weighting != "none" and RESPONSE_JSD not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, RESPONSE_JSD]

    def loss_teacher(self) -> Any:
        """The teacher whose distribution the KL term matches, or None (no KL term)."""
        return None

    def _student_totals(
        self, unwrapped: Any, inputs: dict[str, Any], teacher: tuple | None, weights: Tensor | None = None
    ) -> tuple:
        causal_lm = causal_lm_of(unwrapped)
        hidden, targets = response_hidden_states(causal_lm, inputs)
        totals = response_totals(
            causal_lm.get_output_embeddings(),
            hidden,
            targets,
            position_chunk=self.position_chunk,
            teacher_head=None if teacher is None else teacher[0],
            teacher_hidden=None if teacher is None else teacher[1],
            weights=weights,
            temperature=self.kl_temperature,
        )
        # A tuple of tensors, not the dataclass: what a DDP wrapper's forward knows how to pass back.
        return totals.nll, totals.kl, totals.entropy, totals.correct, totals.tokens

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from trl.models.utils import _ForwardRedirection

        inputs = dict(inputs)
        response_jsd = inputs.pop(RESPONSE_JSD, None)
        weights = None
        if self.token_weighting != "none":
            if response_jsd is None:
                raise ValueError(f"token_weighting={self.token_weighting} but the batch carries no per-token JSD")
            weights = normalised_weights(response_jsd, self.token_weighting, self.token_weight_fraction)
        teacher_model = self.loss_teacher()
        teacher = None
        if teacher_model is not None:
            teacher_lm = causal_lm_of(self.accelerator.unwrap_model(teacher_model))
            teacher_lm.eval()
            with torch.no_grad():
                teacher = (teacher_lm.get_output_embeddings(), response_hidden_states(teacher_lm, inputs)[0])
        unwrapped = self.accelerator.unwrap_model(model)
        # Through the (DDP) wrapper's forward, so it prepares the gradient reduction as for a plain forward.
        totals = ResponseTotals(
            *_ForwardRedirection()(model, unwrapped, self._student_totals, unwrapped, inputs, teacher, weights)
        )
        count = totals.tokens if num_items_in_batch is None else num_items_in_batch
        summed = self.nll_weight * totals.nll
        if totals.kl is not None:
            summed = summed + self.kl_weight * totals.kl
        loss = summed / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        self._record(totals, inputs, teacher is not None)
        return (loss, None) if return_outputs else loss

    def _record(self, totals: ResponseTotals, inputs: dict[str, Any], teacher: bool) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        tokens = gather(totals.tokens).sum()
        sums = {"mean_token_accuracy": totals.correct, "entropy": totals.entropy}
        if totals.kl is not None:
            sums |= {"kl": totals.kl.detach(), "nll": totals.nll.detach()}
        for name, value in sums.items():
            self._metrics[mode][name].append((gather(value).sum() / tokens).item() if tokens > 0 else 0.0)
        if mode == "train":
            real, positions = _batch_tokens(inputs)
            real = int(gather(real).sum())
            self.forwarded["trained"] += real
            self.forwarded["padding"] += int(gather(torch.tensor(positions, device=totals.tokens.device)).sum()) - real
            self.forwarded["loss_tokens"] += int(tokens)
            self.forwarded["teacher_forward"] += real if teacher else 0
            self._metrics[mode]["num_tokens"] = [self.forwarded["trained"]]
