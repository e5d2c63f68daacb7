"""A seeded synthetic generator of a Brazilian card acquirer's transactions, with fraud.

What it models (all vectorised numpy, then one polars DataFrame):

- merchants: MCC, state and city (the state's capital), size (small/medium/large -> popularity);
- customers, each with one card (BIN, issuer, home state), a phone (device id) and a home IP;
- payment method: credit, debit or PIX; credit purchases in 1-12 *parcelas* (more likely for
  larger amounts); channel POS or e-commerce; device and IP ids for e-commerce and PIX;
- amounts log-normal per MCC, scaled per customer; timestamps with a daily curve (quiet
  nights, lunch and evening peaks) and a weekly one (busy Fridays, quiet Sundays, paydays);
- legitimate noise that looks like fraud: travellers, new phones, night owls, small fares;
- about 1.5 % fraud, as four patterns a fraud team knows:
  ``card_testing`` (bursts of tiny e-commerce amounts on one card across many merchants),
  ``account_takeover`` (new device + unusual hour + amount far above the card's habit),
  ``merchant_collusion`` (a few small merchants suddenly selling big, long-installment credit
  purchases to many cards), ``impossible_travel`` (a cloned card used at a POS in a distant
  state minutes after the real card was used at home);
- chargebacks arrive late: ``chargeback_at`` is days to weeks after the transaction (a few
  frauds are never disputed, and a few legitimate sales are disputed anyway). The label a model
  may learn from is whether the chargeback had arrived by a cutoff: see ``label_at``.

Timestamps are naive local time (America/Sao_Paulo). ``is_fraud`` and ``fraud_pattern`` are the
generator's ground truth, for tests and analysis only; models use the chargeback label.

CLI: ``python -m examples.fraud.data --rows 250000 --out transactions.parquet``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

DEFAULT_ROWS = 250_000
DEFAULT_SEED = 7
DEFAULT_START = datetime(2024, 1, 1)
DEFAULT_DAYS = 91

# state, capital, latitude, longitude, share of the card base
STATES: list[tuple[str, str, float, float, float]] = [
    ("SP", "São Paulo", -23.55, -46.63, 0.28),
    ("RJ", "Rio de Janeiro", -22.91, -43.17, 0.10),
    ("MG", "Belo Horizonte", -19.92, -43.94, 0.10),
    ("RS", "Porto Alegre", -30.03, -51.23, 0.06),
    ("PR", "Curitiba", -25.43, -49.27, 0.06),
    ("BA", "Salvador", -12.97, -38.50, 0.06),
    ("SC", "Florianópolis", -27.59, -48.55, 0.04),
    ("PE", "Recife", -8.05, -34.88, 0.04),
    ("CE", "Fortaleza", -3.72, -38.54, 0.04),
    ("GO", "Goiânia", -16.68, -49.25, 0.03),
    ("DF", "Brasília", -15.79, -47.88, 0.03),
    ("PA", "Belém", -1.46, -48.50, 0.03),
    ("AM", "Manaus", -3.12, -60.02, 0.02),
    ("ES", "Vitória", -20.32, -40.34, 0.02),
    ("MT", "Cuiabá", -15.60, -56.10, 0.02),
    ("MS", "Campo Grande", -20.47, -54.62, 0.015),
    ("MA", "São Luís", -2.53, -44.30, 0.015),
    ("PB", "João Pessoa", -7.12, -34.86, 0.01),
    ("RN", "Natal", -5.79, -35.21, 0.01),
    ("AL", "Maceió", -9.67, -35.74, 0.01),
    ("PI", "Teresina", -5.09, -42.80, 0.01),
    ("SE", "Aracaju", -10.91, -37.07, 0.01),
    ("RO", "Porto Velho", -8.76, -63.90, 0.008),
    ("TO", "Palmas", -10.18, -48.33, 0.006),
    ("AC", "Rio Branco", -9.97, -67.81, 0.004),
    ("AP", "Macapá", 0.03, -51.07, 0.003),
    ("RR", "Boa Vista", 2.82, -60.67, 0.003),
]
STATE_CODES = [s[0] for s in STATES]
STATE_LAT = {s[0]: s[2] for s in STATES}
STATE_LON = {s[0]: s[3] for s in STATES}

# mcc, description, share of merchants, median amount (R$), log-sd, e-commerce share
MCCS: list[tuple[int, str, float, float, float, float]] = [
    (5411, "supermercados", 0.20, 120.0, 0.80, 0.05),
    (5812, "restaurantes", 0.14, 70.0, 0.60, 0.10),
    (5814, "fast food", 0.10, 35.0, 0.50, 0.25),
    (5541, "postos de combustível", 0.09, 150.0, 0.50, 0.0),
    (5912, "farmácias", 0.09, 60.0, 0.70, 0.10),
    (5651, "vestuário", 0.07, 180.0, 0.70, 0.30),
    (5311, "lojas de departamento", 0.06, 200.0, 0.80, 0.40),
    (5999, "varejo diverso / marketplace", 0.08, 150.0, 0.90, 0.80),
    (5732, "eletrônicos", 0.04, 900.0, 0.80, 0.50),
    (5816, "bens digitais e jogos", 0.04, 30.0, 0.80, 1.0),
    (4111, "transporte", 0.03, 12.0, 0.40, 0.30),
    (4511, "companhias aéreas", 0.02, 900.0, 0.60, 0.95),
    (7011, "hotéis", 0.02, 600.0, 0.60, 0.60),
]

# issuer, BIN prefixes (illustrative, not real ranges), share of cards
ISSUERS: list[tuple[str, tuple[str, ...], float]] = [
    ("Nubank", ("516292", "523421"), 0.24),
    ("Itaú", ("422061", "544731"), 0.18),
    ("Bradesco", ("438935", "552289"), 0.14),
    ("Banco do Brasil", ("498407", "548435"), 0.13),
    ("Caixa", ("506722", "509069"), 0.10),
    ("Santander", ("455182", "530034"), 0.09),
    ("Inter", ("550209",), 0.07),
    ("C6 Bank", ("525662",), 0.05),
]

# A day: quiet nights, lunch and evening peaks. A week: Monday .. Sunday.
HOUR_WEIGHTS = np.array(
    [1.2, 0.7, 0.4, 0.3, 0.3, 0.6, 1.5, 3.0, 4.5, 5.0, 5.5, 6.5,
     7.5, 6.5, 5.5, 5.5, 5.8, 6.2, 7.0, 7.5, 7.0, 5.5, 3.5, 2.0]
)  # fmt: skip
WEEKDAY_WEIGHTS = np.array([0.95, 0.95, 1.0, 1.02, 1.18, 1.12, 0.80])

PATTERN_SHARES = {
    "card_testing": 0.30,
    "account_takeover": 0.30,
    "merchant_collusion": 0.25,
    "impossible_travel": 0.15,
}

_US = 1_000_000  # microseconds per second


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """How much data, over which period, with how much fraud."""

    rows: int = DEFAULT_ROWS  # transactions, exactly
    seed: int = DEFAULT_SEED
    start: datetime = DEFAULT_START
    days: int = DEFAULT_DAYS
    fraud_rate: float = 0.015  # share of transactions that are fraud (ground truth)
    dispute_rate: float = 0.0008  # legitimate sales charged back anyway ("friendly fraud")
    undisputed_fraud: float = 0.05  # frauds never charged back
    chargeback_median_days: float = 14.0  # delay from sale to chargeback


def _haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def distance_km(state_a: np.ndarray, state_b: np.ndarray) -> np.ndarray:
    """Distance between the capitals of two arrays of state indexes (into ``STATES``)."""
    lat = np.array([s[2] for s in STATES])
    lon = np.array([s[3] for s in STATES])
    return _haversine_km(lat[state_a], lon[state_a], lat[state_b], lon[state_b])


class _World:
    """Merchants and cards, as parallel numpy arrays."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator) -> None:
        n_states = len(STATES)
        state_share = np.array([s[4] for s in STATES])
        state_share /= state_share.sum()
        mcc_share = np.array([m[2] for m in MCCS])
        mcc_share /= mcc_share.sum()

        # Merchants, sorted by state so a state's merchants form one contiguous block.
        self.n_merchants = max(150, cfg.rows // 250)
        m_state = np.sort(rng.choice(n_states, self.n_merchants, p=state_share))
        self.m_state = m_state
        self.m_mcc = rng.choice(len(MCCS), self.n_merchants, p=mcc_share)
        self.m_size = rng.choice(3, self.n_merchants, p=[0.70, 0.25, 0.05])
        size_pop = np.array([1.0, 5.0, 25.0])[self.m_size]
        self.m_pop = size_pop * rng.pareto(3.0, self.n_merchants).clip(0.05, 10) + 0.1
        cum = np.cumsum(self.m_pop)
        self.m_cum = cum
        first = np.searchsorted(m_state, np.arange(n_states), side="left")
        last = np.searchsorted(m_state, np.arange(n_states), side="right")
        self.state_lo = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
        self.state_lo[first == 0] = 0.0
        self.state_hi = np.where(last > 0, cum[np.maximum(last - 1, 0)], 0.0)
        self.state_has = last > first
        ecom_mccs = np.array([m[5] for m in MCCS])[self.m_mcc]
        self.m_ecom = ecom_mccs
        self.ecom_merchants = np.flatnonzero(ecom_mccs >= 0.5)
        self.m_small = np.flatnonzero(self.m_size == 0)

        # Cards: one per customer.
        self.n_cards = max(500, cfg.rows // 20)
        issuer_share = np.array([i[2] for i in ISSUERS])
        issuer_share /= issuer_share.sum()
        self.c_state = rng.choice(n_states, self.n_cards, p=state_share)
        # A card whose home state has no merchant shops in SP (always has merchants at size).
        self.c_state = np.where(self.state_has[self.c_state], self.c_state, 0)
        self.c_issuer = rng.choice(len(ISSUERS), self.n_cards, p=issuer_share)
        bin_pick = rng.integers(0, 2, self.n_cards)
        bins = np.array([ISSUERS[i][1][min(b, len(ISSUERS[i][1]) - 1)]
                         for i, b in zip(self.c_issuer, bin_pick, strict=True)])  # fmt: skip
        self.c_bin = bins
        self.c_activity = rng.gamma(1.3, 1.0, self.n_cards) + 0.02
        self.c_scale = np.exp(rng.normal(0.0, 0.35, self.n_cards))

    def pick_merchant(self, rng: np.random.Generator, state: np.ndarray) -> np.ndarray:
        """A merchant in each given state, by popularity."""
        lo = self.state_lo[state]
        hi = self.state_hi[state]
        u = lo + rng.random(state.size) * (hi - lo)
        idx = np.searchsorted(self.m_cum, u, side="right")
        return np.clip(idx, 0, self.n_merchants - 1)

    def pick_any_merchant(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n) * self.m_cum[-1]
        return np.clip(np.searchsorted(self.m_cum, u, side="right"), 0, self.n_merchants - 1)


def _timestamps(cfg: GeneratorConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds since ``cfg.start`` with daily and weekly seasonality."""
    days = np.arange(cfg.days)
    dates = [cfg.start + timedelta(days=int(d)) for d in days]
    w = np.array([WEEKDAY_WEIGHTS[d.weekday()] for d in dates])
    payday = np.array([1.25 if d.day in (5, 6, 20, 21) else 1.0 for d in dates])
    w = w * payday * np.linspace(1.0, 1.08, cfg.days)  # a slowly growing business
    day = rng.choice(cfg.days, n, p=w / w.sum())
    hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    second = rng.integers(0, 3600, n)
    return day.astype(np.int64) * 86400 + hour * 3600 + second


def _night_timestamps(cfg: GeneratorConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    day = rng.integers(0, cfg.days, n)
    hour = rng.choice([0, 1, 2, 3, 4, 5], n, p=[0.2, 0.25, 0.2, 0.15, 0.1, 0.1])
    return day.astype(np.int64) * 86400 + hour * 3600 + rng.integers(0, 3600, n)


def _amounts(
    rng: np.random.Generator, mcc_idx: np.ndarray, scale: np.ndarray | float = 1.0
) -> np.ndarray:
    median = np.array([m[3] for m in MCCS])[mcc_idx]
    sd = np.array([m[4] for m in MCCS])[mcc_idx]
    value = median * scale * np.exp(rng.normal(0.0, 1.0, mcc_idx.size) * sd)
    return np.round(np.clip(value, 1.0, 50_000.0), 2)


def _installments(rng: np.random.Generator, amount: np.ndarray, credit: np.ndarray) -> np.ndarray:
    """1 for debit and PIX; for credit, parcelas become likely as the amount grows."""
    p_split = 0.8 / (1.0 + np.exp(-1.6 * (np.log(amount) - np.log(350.0))))
    split = credit & (rng.random(amount.size) < p_split)
    n = rng.choice([2, 3, 4, 5, 6, 8, 10, 12], amount.size,
                   p=[0.22, 0.22, 0.08, 0.1, 0.14, 0.06, 0.12, 0.06])  # fmt: skip
    return np.where(split, n, 1).astype(np.int8)


@dataclass
class _Block:
    """Columns of a batch of transactions, as index arrays into the world."""

    t: np.ndarray  # seconds since start
    card: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    method: np.ndarray  # 0 credit, 1 debit, 2 pix
    channel: np.ndarray  # 0 pos, 1 ecommerce
    installments: np.ndarray
    device: np.ndarray  # -1 none; the card's phones are 2*card and 2*card+1; others >= 1e9
    ip: np.ndarray  # -1 none; the card's home IP is the card's number; others >= 1e9
    pattern: np.ndarray  # 0 legit, 1.. fraud pattern


def _legit(cfg: GeneratorConfig, rng: np.random.Generator, w: _World, n: int) -> _Block:
    t = _timestamps(cfg, rng, n)
    card = rng.choice(w.n_cards, n, p=w.c_activity / w.c_activity.sum())
    state = w.c_state[card].copy()
    # Travellers: 4 % of cards spend a few days in another state during the period.
    travellers = rng.random(w.n_cards) < 0.04
    trip_state = rng.choice(
        len(STATES), w.n_cards, p=[s[4] for s in STATES] / np.sum([s[4] for s in STATES])
    )
    trip_state = np.where(w.state_has[trip_state], trip_state, 0)
    trip_start = rng.integers(0, cfg.days, w.n_cards).astype(np.int64) * 86400 + rng.integers(
        6 * 3600, 22 * 3600, w.n_cards
    )
    trip_end = trip_start + rng.integers(2, 8, w.n_cards) * 86400
    away = travellers[card] & (t >= trip_start[card]) & (t < trip_end[card])
    state = np.where(away, trip_state[card], state)

    national = rng.random(n) < 0.12  # bought from a merchant anywhere in Brazil
    merchant = np.where(national, w.pick_any_merchant(rng, n), w.pick_merchant(rng, state))
    mcc = w.m_mcc[merchant]
    ecom_share = w.m_ecom[merchant]
    far = w.m_state[merchant] != state
    channel = np.where(far, ecom_share > 0.0, rng.random(n) < ecom_share).astype(np.int8)
    # A POS sale at a merchant far away only happens for merchants that also sell in person;
    # keep those few (they look like travel) as legitimate noise.
    amount = _amounts(rng, mcc, w.c_scale[card])
    method = rng.choice(3, n, p=[0.50, 0.25, 0.25]).astype(np.int8)
    installments = _installments(rng, amount, method == 0)
    # Devices: e-commerce and PIX come from the customer's phone (sometimes the second one,
    # sometimes a brand new one); card-present sales have none.
    has_device = (channel == 1) | (method == 2)
    u = rng.random(n)
    dev = np.where(u < 0.90, 2 * card, np.where(u < 0.975, 2 * card + 1, _new_ids(rng, n)))
    device = np.where(has_device, dev, -1)
    ipu = rng.random(n)
    ip = np.where(has_device, np.where(ipu < 0.8, card, _new_ids(rng, n)), -1)
    return _Block(t, card, merchant, amount, method, channel, installments, device, ip,
                  np.zeros(n, dtype=np.int8))  # fmt: skip


def _group_offsets(rng: np.random.Generator, sizes: np.ndarray, mean_gap: float) -> np.ndarray:
    """Seconds from each group's first event, for groups of the given sizes laid end to end."""
    gaps = rng.exponential(mean_gap, sizes.sum()).astype(np.int64) + 3
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    cum = np.cumsum(gaps)
    offsets = cum - cum[starts]
    return offsets


def _sizes(rng: np.random.Generator, total: int, low: int, high: int) -> np.ndarray:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(low, high + 1)))
    if sizes:
        sizes[-1] -= sum(sizes) - total
    return np.array([s for s in sizes if s > 0], dtype=np.int64)


def _new_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ids of devices or IPs never seen before (the card's own ones are small numbers)."""
    return 10**9 + rng.integers(0, 10**9, n)


def _card_testing(cfg: GeneratorConfig, rng: np.random.Generator, w: _World, n: int) -> _Block:
    sizes = _sizes(rng, n, 6, 20)
    k = sizes.size
    card = np.repeat(rng.integers(0, w.n_cards, k), sizes)
    start = np.repeat(_timestamps(cfg, rng, k), sizes)
    t = start + _group_offsets(rng, sizes, 45.0)
    merchant = w.ecom_merchants[rng.integers(0, w.ecom_merchants.size, n)]
    amount = np.round(rng.uniform(1.0, 12.0, n), 2)
    # The last test of some bursts is a real purchase, once the card is known to work.
    last = np.cumsum(sizes) - 1
    cash_out = last[rng.random(k) < 0.4]
    amount[cash_out] = _amounts(rng, w.m_mcc[merchant[cash_out]], 3.0)
    device = np.repeat(_new_ids(rng, k), sizes)
    ip = np.repeat(_new_ids(rng, k), sizes)
    return _Block(t, card, merchant, amount, np.zeros(n, np.int8), np.ones(n, np.int8),
                  np.ones(n, np.int8), device, ip, np.full(n, 1, np.int8))  # fmt: skip


def _account_takeover(cfg: GeneratorConfig, rng: np.random.Generator, w: _World, n: int) -> _Block:
    sizes = _sizes(rng, n, 1, 3)
    k = sizes.size
    card = np.repeat(rng.integers(0, w.n_cards, k), sizes)
    night = rng.random(k) < 0.7
    start = np.where(night, _night_timestamps(cfg, rng, k), _timestamps(cfg, rng, k))
    t = np.repeat(start, sizes) + _group_offsets(rng, sizes, 600.0)
    wanted = [i for i, m in enumerate(MCCS) if m[0] in (5732, 5999, 4511, 5816, 5311)]
    targets = np.flatnonzero(np.isin(w.m_mcc, wanted))
    merchant = targets[rng.integers(0, targets.size, n)]
    # Far above the card's habit (several times its usual spend), not always extreme.
    typical = np.array([m[3] for m in MCCS]).mean() * w.c_scale[card]
    amount = np.round(np.clip(typical * np.exp(rng.normal(np.log(6.0), 0.7, n)), 20, 30_000), 2)
    method = np.where(rng.random(n) < 0.4, 2, 0).astype(np.int8)
    installments = _installments(rng, amount, method == 0)
    device = np.repeat(_new_ids(rng, k), sizes)
    ip = np.repeat(_new_ids(rng, k), sizes)
    return _Block(t, card, merchant, amount, method, np.ones(n, np.int8), installments,
                  device, ip, np.full(n, 2, np.int8))  # fmt: skip


def _merchant_collusion(
    cfg: GeneratorConfig, rng: np.random.Generator, w: _World, n: int
) -> _Block:
    colluders = rng.choice(w.m_small, max(3, w.n_merchants // 250), replace=False)
    which = rng.integers(0, colluders.size, n)
    merchant = colluders[which]
    # Each colluder runs its scheme for about ten days, in business hours.
    begin = rng.integers(0, max(1, cfg.days - 10), colluders.size).astype(np.int64) * 86400
    day = rng.integers(0, 10, n).astype(np.int64)
    t = begin[which] + day * 86400 + rng.integers(9 * 3600, 20 * 3600, n)
    t = np.minimum(t, cfg.days * 86400 - 1)
    card = rng.integers(0, w.n_cards, n)
    amount = np.round(np.exp(rng.normal(np.log(1400.0), 0.5, n)), 2)
    installments = rng.choice([6, 8, 10, 12], n, p=[0.15, 0.15, 0.35, 0.35]).astype(np.int8)
    channel = (rng.random(n) < 0.5).astype(np.int8)
    device = np.where(channel == 1, _new_ids(rng, n), -1)
    ip = np.where(channel == 1, _new_ids(rng, n), -1)
    return _Block(t, card, merchant, amount, np.zeros(n, np.int8), channel, installments,
                  device, ip, np.full(n, 3, np.int8))  # fmt: skip


def _impossible_travel(
    cfg: GeneratorConfig, rng: np.random.Generator, w: _World, n: int
) -> tuple[_Block, _Block]:
    """The real cardholder buys at home; minutes later a clone buys in a distant state.

    Returns (the legitimate home purchases, the fraudulent far ones).
    """
    sizes = _sizes(rng, n, 1, 2)
    k = sizes.size
    card = rng.integers(0, w.n_cards, k)
    home = w.c_state[card]
    t0 = _timestamps(cfg, rng, k)
    home_merchant = w.pick_merchant(rng, home)
    home_amount = _amounts(rng, w.m_mcc[home_merchant], w.c_scale[card])
    home_method = rng.choice(2, k).astype(np.int8)
    legit = _Block(t0, card, home_merchant, home_amount, home_method, np.zeros(k, np.int8),
                   _installments(rng, home_amount, home_method == 0), np.full(k, -1),
                   np.full(k, -1), np.zeros(k, np.int8))  # fmt: skip
    # A state at least 1,000 km from home.
    cand = rng.integers(0, len(STATES), (k, 8))
    dist = distance_km(np.repeat(home, 8).reshape(k, 8), cand)
    ok = (dist > 1000) & w.state_has[cand]
    pick = np.where(ok.any(axis=1), cand[np.arange(k), ok.argmax(axis=1)], 3)
    far_state = np.repeat(pick, sizes)
    fcard = np.repeat(card, sizes)
    t = np.repeat(t0 + rng.integers(4 * 60, 90 * 60, k), sizes) + _group_offsets(rng, sizes, 900.0)
    merchant = w.pick_merchant(rng, far_state)
    amount = _amounts(rng, w.m_mcc[merchant], 2.5 * w.c_scale[fcard])
    method = rng.choice(2, n, p=[0.8, 0.2]).astype(np.int8)
    fraud = _Block(t, fcard, merchant, amount, method, np.zeros(n, np.int8),
                   _installments(rng, amount, method == 0), np.full(n, -1), np.full(n, -1),
                   np.full(n, 4, np.int8))  # fmt: skip
    return legit, fraud


def _concat(blocks: list[_Block]) -> _Block:
    return _Block(*(np.concatenate([getattr(b, f) for b in blocks])
                    for f in _Block.__dataclass_fields__))  # fmt: skip


PATTERNS = ["legit", "card_testing", "account_takeover", "merchant_collusion", "impossible_travel"]
METHODS = ["credit", "debit", "pix"]
CHANNELS = ["pos", "ecommerce"]


def generate(config: GeneratorConfig | None = None, **overrides: object) -> pl.DataFrame:
    """Generate ``config.rows`` transactions, sorted by time. Same config, same frame."""
    cfg = config or GeneratorConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]
    if cfg.rows < 1000:
        raise ValueError(f"rows={cfg.rows}: generate at least 1000 transactions")
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)

    n_fraud = round(cfg.rows * cfg.fraud_rate)
    counts = {p: round(n_fraud * s) for p, s in PATTERN_SHARES.items()}
    travel_legit, travel_fraud = _impossible_travel(cfg, rng, world, counts["impossible_travel"])
    fraud = [
        _card_testing(cfg, rng, world, counts["card_testing"]),
        _account_takeover(cfg, rng, world, counts["account_takeover"]),
        _merchant_collusion(cfg, rng, world, counts["merchant_collusion"]),
        travel_fraud,
    ]
    n_legit = cfg.rows - sum(b.t.size for b in fraud) - travel_legit.t.size
    b = _concat([_legit(cfg, rng, world, n_legit), travel_legit, *fraud])
    n = b.t.size
    b.t = np.minimum(b.t, cfg.days * 86400 - 1)

    is_fraud = b.pattern > 0
    # Chargebacks: days to weeks later; some frauds never disputed, some legit sales disputed.
    delay = np.exp(rng.normal(np.log(cfg.chargeback_median_days), 0.55, n)) * 86400
    delay = np.clip(delay, 2 * 86400, 120 * 86400).astype(np.int64)
    disputed = np.where(is_fraud, rng.random(n) >= cfg.undisputed_fraud,
                        rng.random(n) < cfg.dispute_rate)  # fmt: skip

    start_us = int((cfg.start.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()) * _US
    ts_us = start_us + b.t * _US
    cb_us = np.where(disputed, ts_us + delay * _US, 0)

    m = b.merchant
    state_idx = world.m_state[m]
    order = np.lexsort((np.arange(n), ts_us))

    df = pl.DataFrame(
        {
            "ts": pl.Series(ts_us[order]).cast(pl.Datetime("us")),
            "card": b.card[order],
            "merchant": m[order],
            "amount": b.amount[order],
            "method": b.method[order],
            "channel": b.channel[order],
            "installments": b.installments[order].astype(np.int8),
            "device": b.device[order],
            "ip": b.ip[order],
            "pattern": b.pattern[order],
            "is_fraud": is_fraud[order],
            "cb_us": cb_us[order],
            "state_idx": state_idx[order],
            "mcc_idx": world.m_mcc[m][order],
            "size": world.m_size[m][order],
            "bin": world.c_bin[b.card][order],
            "issuer_idx": world.c_issuer[b.card][order],
            "home_idx": world.c_state[b.card][order],
        }
    )
    states = pl.Series([s[0] for s in STATES])
    cities = pl.Series([s[1] for s in STATES])
    mcc_codes = pl.Series([m[0] for m in MCCS], dtype=pl.Int16)
    issuers = pl.Series([i[0] for i in ISSUERS])
    out = df.select(
        pl.format("tx{}", pl.int_range(1, n + 1).cast(pl.String).str.zfill(9)).alias(
            "transaction_id"
        ),
        pl.col("ts").alias("timestamp"),
        pl.format("m{}", pl.col("merchant").cast(pl.String).str.zfill(6)).alias("merchant_id"),
        pl.col("mcc_idx").replace_strict(list(range(len(MCCS))), mcc_codes).alias("mcc"),
        pl.col("state_idx").replace_strict(list(range(len(STATES))), states).alias("state"),
        pl.col("state_idx").replace_strict(list(range(len(STATES))), cities).alias("city"),
        pl.col("size")
        .replace_strict([0, 1, 2], ["small", "medium", "large"])
        .alias("merchant_size"),
        pl.format("c{}", pl.col("card").cast(pl.String).str.zfill(7)).alias("customer_id"),
        pl.format("k{}", pl.col("card").cast(pl.String).str.zfill(7)).alias("card_id"),
        pl.col("bin"),
        pl.col("issuer_idx").replace_strict(list(range(len(ISSUERS))), issuers).alias("issuer"),
        pl.col("home_idx").replace_strict(list(range(len(STATES))), states).alias("card_state"),
        pl.col("method").replace_strict([0, 1, 2], METHODS).alias("payment_method"),
        pl.col("installments"),
        pl.col("amount"),
        pl.col("channel").replace_strict([0, 1], CHANNELS).alias("channel"),
        pl.when(pl.col("device") != -1)
        .then(pl.format("d{}", pl.col("device").cast(pl.String)))
        .otherwise(None)
        .alias("device_id"),
        pl.when(pl.col("ip") != -1)
        .then(pl.format("ip{}", pl.col("ip").cast(pl.String)))
        .otherwise(None)
        .alias("ip_id"),
        pl.when(pl.col("cb_us") > 0)
        .then(pl.col("cb_us").cast(pl.Datetime("us")))
        .otherwise(None)
        .alias("chargeback_at"),
        pl.col("is_fraud"),
        pl.col("pattern")
        .replace_strict(list(range(len(PATTERNS))), PATTERNS)
        .alias("fraud_pattern"),
    )
    return out


def label_expr(cutoff: datetime) -> pl.Expr:
    """``label`` (Int8): 1 when the transaction's chargeback had arrived by ``cutoff``."""
    arrived = pl.col("chargeback_at").is_not_null() & (pl.col("chargeback_at") <= cutoff)
    return arrived.cast(pl.Int8).alias("label")


def label_at(df: pl.DataFrame, cutoff: datetime) -> pl.Series:
    """The labels known on ``cutoff``: a chargeback had arrived by then (1) or not (0)."""
    return df.select(label_expr(cutoff)).to_series()


def write(df: pl.DataFrame, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(out, compression="zstd")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--out", default="transactions.parquet")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    df = generate(GeneratorConfig(rows=args.rows, seed=args.seed, days=args.days))
    path = write(df, args.out)
    fraud = df["is_fraud"].mean()
    print(
        f"wrote {df.height:,} transactions ({fraud:.2%} fraud) to {path} "
        f"in {time.perf_counter() - began:.1f}s"
    )


if __name__ == "__main__":
    main()
