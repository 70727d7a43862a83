"""Labels and their provenance: who said what about a drawing, from where, and the effective label that follows.

Every word a person gives on a drawing is a ``Label`` row (a digit or "not a digit", who, from which
client network, trusted or not, how, when). A label is *trusted* when staff gave it (the review queue
and the admin are staff's), or an account holding the ``classifier.trusted_labeller`` permission (staff
grant it in the admin), or staff imported it with a dataset. Everyone else is a visitor.

The prediction's own ``label`` / ``not_a_digit`` fields hold the *effective* label, and
``label_trust`` how far it is trusted, derived from those rows by one rule:

1. If a trusted source labelled the drawing, its latest word is the label: ``"trusted"``.
2. Otherwise each visitor's latest word counts, a visitor being one *client*: labels with the same giver
   (``Label.giver``) or from the same client network (``Label.client``: an IPv4 address, an IPv6 /64)
   are one client; a label given with the prediction's label key is the prediction's own client (its
   session or account, its network). When at least ``LABELS_AGREEMENT_CLIENTS`` distinct clients gave the
   same label and none gave another, it is ``"agreed"``; otherwise the latest visitor word is the label,
   ``"visitor"``.
3. "Not a digit" is a label like any other, but it leaves the drawing without a digit: it never trains.

What the trust level changes is what the label is used for (``PredictionQuerySet.for_training`` /
``for_evidence``): ``LABELS_TRAIN_TRUST`` (default "trusted") is the least trusted label that trains and
counts toward the retraining policy's threshold; ``LABELS_EVIDENCE_TRUST`` (default "trusted") the least
trusted one in the field set and the shadow traffic the promotion gate reads. Every effective label,
trusted or not, is counted in the statistics; a drawing whose label is not trusted waits in the review
queue, with the visitor's label as the suggestion, until staff confirm or correct it.

The rule is applied when a label is recorded or withdrawn; ``manage.py recompute_labels`` applies it to
every drawing (after changing ``LABELS_AGREEMENT_CLIENTS``).
"""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from mnistsite import clients
from mnistsite.errors import ApplicationError

from .models import Label, Prediction

log = logging.getLogger(__name__)

NOT_A_DIGIT = "x"
Trust = Prediction.Trust
# The prediction's fields that hold its effective label.
EFFECTIVE_FIELDS = ("label", "not_a_digit", "label_by_staff", "labelled_by_id", "labelled_at", "label_trust")
TRUSTED_PERMISSION = "classifier.trusted_labeller"

LabelValue = int | str  # a digit 0-9, or NOT_A_DIGIT


@dataclass(frozen=True)
class Verdict:
    """The effective label of a drawing, how far it is trusted, and the Label row it comes from (None: no
    effective label)."""

    digit: int | None = None
    not_a_digit: bool = False
    by_staff: bool = False
    trust: str = Trust.NONE
    source: Label | None = None


def is_staff(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def is_trusted(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Staff, or an active account staff trust (the ``classifier.trusted_labeller`` permission)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_staff or user.has_perm(TRUSTED_PERMISSION))


def client_network(address: str | None) -> str:
    """The client network a label came from, as text (``mnistsite.clients.client_network``: an IPv4
    address itself, an IPv6 address's /64 as its first address); "" when there is none or it is not an
    address."""
    if not address:
        return ""
    network = clients.client_network(address)
    try:
        ipaddress.ip_address(network)
    except ValueError:
        return ""
    return network


def label_value(value: Any, *, allow_not_a_digit: bool = True) -> LabelValue:
    """A digit 0-9 (a JSON integer, not a bool or a string) or ``"x"``; anything else is a 400."""
    if allow_not_a_digit and value == NOT_A_DIGIT:
        return NOT_A_DIGIT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        message = "The label must be a digit from 0 to 9" + (' or "x" (not a digit).' if allow_not_a_digit else ".")
        raise ApplicationError("invalid_label", message, detail={"label": value}, status=400)
    return value


def _ordered(labels: Iterable[Label]) -> list[Label]:
    return sorted(labels, key=lambda label: (label.at, label.pk or 0))


def _identity(label: Label, prediction: Prediction | None) -> tuple[str, str]:
    """(giver, network) of the client a visitor's label stands for. The label key belongs to the
    prediction's own client: a key label is that client's, whichever address it came from."""
    giver = label.giver or f"label:{label.pk}"
    network = label.client
    if label.via == Label.Via.LABEL_KEY and prediction is not None:
        if prediction.user_id:
            giver = f"user:{prediction.user_id}"
        elif prediction.session_key:
            giver = f"session:{prediction.session_key}"
        network = client_network(prediction.client_ip) or network
    return giver, network


def _clients(visitors: list[Label], prediction: Prediction | None) -> list[Label]:
    """Each distinct client's latest word (oldest first): labels sharing a giver or a network are one client."""
    parent = list(range(len(visitors)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[str, int] = {}
    for i, label in enumerate(visitors):
        giver, network = _identity(label, prediction)
        for key in (f"giver:{giver}", f"net:{network}" if network else None):
            if key is None:
                continue
            if key in seen:
                parent[root(i)] = root(seen[key])
            else:
                seen[key] = i
    latest: dict[int, Label] = {}
    for i, label in enumerate(visitors):  # oldest first: later words replace earlier ones
        latest[root(i)] = label
    return _ordered(latest.values())


def effective_label(labels: Iterable[Label], *, prediction: Prediction | None = None,
                    agreement_clients: int | None = None) -> Verdict:
    """Apply the rule above to a drawing's labels (any order); ``prediction`` is the drawing they are on
    (who its own client is, for labels given with its label key)."""
    needed = settings.LABELS_AGREEMENT_CLIENTS if agreement_clients is None else agreement_clients
    ordered = _ordered(labels)
    trusted = [label for label in ordered if label.trusted or label.by_staff]
    if trusted:
        return _verdict(trusted[-1], Trust.TRUSTED)
    if not ordered:
        return Verdict()
    words = _clients(ordered, prediction)
    votes = Counter(label.value for label in words)
    if len(votes) == 1 and len(words) >= needed:
        return _verdict(words[-1], Trust.AGREED)
    return _verdict(words[-1], Trust.VISITOR)


def _verdict(label: Label, trust: str) -> Verdict:
    return Verdict(digit=None if label.not_a_digit else label.digit, not_a_digit=label.not_a_digit,
                   by_staff=label.by_staff, trust=trust, source=label)


def label_recompute(*, prediction: Prediction, agreement_clients: int | None = None) -> bool:
    """Set the prediction's effective label from its Label rows; whether anything changed."""
    verdict = effective_label(prediction.labels.all(), prediction=prediction, agreement_clients=agreement_clients)
    fields = {
        "label": verdict.digit,
        "not_a_digit": verdict.not_a_digit,
        "label_by_staff": verdict.by_staff,
        "labelled_by_id": verdict.source.given_by_id if verdict.source else None,
        "labelled_at": verdict.source.at if verdict.source else None,
        "label_trust": verdict.trust,
    }
    changed = [name for name, value in fields.items() if getattr(prediction, name) != value]
    for name in changed:
        setattr(prediction, name, fields[name])
    if changed:
        prediction.save(update_fields=[name.removesuffix("_id") for name in changed])
    return bool(changed)


def label_record(
    *,
    prediction: Prediction,
    value: Any,
    by: AbstractBaseUser | AnonymousUser | None,
    via: str,
    giver: str = "",
    client_ip: str | None = None,
    allow_not_a_digit: bool = True,
    at: Any = None,
) -> Label:
    """Record one person's label on a drawing (from ``client_ip``) and update the drawing's effective label."""
    value = label_value(value, allow_not_a_digit=allow_not_a_digit)
    user = by if by is not None and by.is_authenticated else None
    if user is not None:
        giver = f"user:{user.pk}"  # one person, whichever way they came
    with transaction.atomic():
        # Lock the drawing: two labels arriving together are applied one after the other.
        locked = Prediction.objects.select_for_update().get(pk=prediction.pk)
        label = Label.objects.create(
            prediction=locked, digit=None if value == NOT_A_DIGIT else value,
            not_a_digit=value == NOT_A_DIGIT, given_by=user, by_staff=is_staff(user), trusted=is_trusted(user),
            giver=giver[:64], via=via, client=client_network(client_ip), at=at or timezone.now(),
        )
        label_recompute(prediction=locked)
    _copy_effective(locked, prediction)
    return label


def _copy_effective(source: Prediction, target: Prediction) -> None:
    for name in EFFECTIVE_FIELDS:
        setattr(target, name, getattr(source, name))


def labels_clear(*, prediction: Prediction) -> Prediction:
    """Withdraw every label of a drawing (staff, from the admin): it is unlabelled again."""
    with transaction.atomic():
        locked = Prediction.objects.select_for_update().get(pk=prediction.pk)
        locked.labels.all().delete()
        label_recompute(prediction=locked)
    _copy_effective(locked, prediction)
    return prediction


@dataclass(frozen=True)
class Withdrawal:
    """What ``labels_withdraw`` did: labels deleted, drawings they were on, drawings whose effective label changed."""

    labels: int
    drawings: int
    changed: int

    def __str__(self) -> str:
        return (f"{self.labels} label{'s' if self.labels != 1 else ''} withdrawn from {self.drawings} "
                f"drawing{'s' if self.drawings != 1 else ''}; {self.changed} changed their effective label")


def labels_withdraw(*, labels: QuerySet[Label], by: AbstractBaseUser | None, reason: str = "") -> Withdrawal:
    """Delete these Label rows (a burst of suspicious labels, say) and recompute their drawings' effective
    labels; recorded in the log with who did it. A version already trained on them is not untrained:
    the next training run (and the next gate) no longer sees them."""
    ids = list(labels.values_list("pk", flat=True))
    drawings = sorted(set(Label.objects.filter(pk__in=ids).values_list("prediction_id", flat=True)))
    changed = 0
    deleted = 0
    for start in range(0, len(drawings), 500):
        chunk = drawings[start:start + 500]
        with transaction.atomic():
            for prediction in Prediction.objects.select_for_update().filter(pk__in=chunk).order_by("pk"):
                deleted += prediction.labels.filter(pk__in=ids).delete()[0]
                changed += label_recompute(prediction=prediction)
    outcome = Withdrawal(labels=deleted, drawings=len(drawings), changed=changed)
    who = getattr(by, "username", None) or "staff"
    log.warning("labels withdrawn by %s: %s%s", who, outcome, f" ({reason})" if reason else "")
    return outcome


def labels_recompute_all(*, agreement_clients: int | None = None) -> int:
    """Re-apply the rule to every drawing that has labels (after changing the setting); how many changed."""
    changed = 0
    ids = Prediction.objects.filter(labels__isnull=False).distinct().order_by("id").values_list("id", flat=True)
    for pk in ids.iterator(chunk_size=2000):
        with transaction.atomic():
            prediction = Prediction.objects.select_for_update().get(pk=pk)
            changed += label_recompute(prediction=prediction, agreement_clients=agreement_clients)
    return changed


def label_trust_counts() -> dict[str, int]:
    """Drawings per trust level of their effective label (a digit or "not a digit")."""
    counts = {str(level): 0 for level in (Trust.TRUSTED, Trust.AGREED, Trust.VISITOR)}
    rows = Prediction.objects.decided().values("label_trust").order_by().annotate(n=Count("id"))
    for row in rows:
        if row["label_trust"] in counts:
            counts[row["label_trust"]] = row["n"]
    return counts
