"""A synthetic bilingual (pt-BR / en) corpus of payment-support conversations.

Each exchange is a customer question and an agent answer about one topic (a refund, a
chargeback, a Pix transfer, a boleto, a declined card, instalments, fees, a fraud alert), with
amounts, order ids, dates and card brands drawn from a seeded generator, so the same seed gives
the same corpus. It is the training data of the tiny assistant model: small enough to learn in
minutes on a laptop CPU, varied enough that perplexity on held-out exchanges means something.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

BRANDS = ("Visa", "Mastercard", "Elo", "Amex", "Hipercard")
BANKS = ("Itaú", "Bradesco", "Nubank", "Caixa", "Santander", "Inter")
NAMES = ("Ana", "Bruno", "Carla", "Diego", "Elisa", "Felipe", "Gabriela", "Hugo", "Julia", "Lucas")

# topic -> ((pt question, pt answer), (en question, en answer)); {slots} are filled per exchange.
_TEMPLATES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "refund": (
        (
            "Olá, sou {name}. Pedi o reembolso do pedido {order} de R$ {amount}. Quando recebo?",
            "Oi {name}! O reembolso do pedido {order} foi aprovado em {date}. O valor de "
            "R$ {amount} volta para o seu cartão {brand} em até {days} dias úteis.",
        ),
        (
            "Hi, this is {name}. I asked for a refund of order {order} for R$ {amount}. "
            "When do I get it?",
            "Hi {name}! The refund of order {order} was approved on {date}. R$ {amount} goes "
            "back to your {brand} card within {days} business days.",
        ),
    ),
    "chargeback": (
        (
            "Não reconheço uma compra de R$ {amount} no meu cartão {brand}. Como contesto?",
            "Sinto muito, {name}. Abri a contestação {order} para a compra de R$ {amount}. O "
            "banco emissor analisa em até {days} dias e você recebe a resposta por e-mail.",
        ),
        (
            "I do not recognise a R$ {amount} charge on my {brand} card. How do I dispute it?",
            "Sorry about that, {name}. I opened dispute {order} for the R$ {amount} charge. The "
            "issuing bank reviews it within {days} days and you will get the answer by email.",
        ),
    ),
    "pix": (
        (
            "Fiz um Pix de R$ {amount} para a loja e o pedido {order} ainda aparece pendente.",
            "Oi {name}, o Pix de R$ {amount} foi recebido às {hour}. O pedido {order} já está "
            "confirmado; a atualização na tela pode levar alguns minutos.",
        ),
        (
            "I paid R$ {amount} by Pix and order {order} still shows as pending.",
            "Hi {name}, the Pix of R$ {amount} arrived at {hour}. Order {order} is confirmed; the "
            "screen may take a few minutes to update.",
        ),
    ),
    "boleto": (
        (
            "Paguei o boleto do pedido {order} no {bank}. Quando o pagamento é compensado?",
            "Olá {name}! Boletos pagos no {bank} são compensados em até {days} dias úteis. "
            "Assim que o pedido {order} for confirmado, avisamos por e-mail.",
        ),
        (
            "I paid the boleto for order {order} at {bank}. When does the payment clear?",
            "Hello {name}! Boletos paid at {bank} clear within {days} business days. As soon as "
            "order {order} is confirmed we will let you know by email.",
        ),
    ),
    "declined": (
        (
            "Meu cartão {brand} foi recusado na compra de R$ {amount}. O que aconteceu?",
            "Oi {name}, a transação de R$ {amount} foi recusada pelo banco emissor por "
            "segurança. Confirme a compra no app do {bank} e tente de novo.",
        ),
        (
            "My {brand} card was declined on a R$ {amount} purchase. What happened?",
            "Hi {name}, the issuing bank declined the R$ {amount} transaction as a security "
            "check. Confirm the purchase in the {bank} app and try again.",
        ),
    ),
    "installments": (
        (
            "Posso parcelar R$ {amount} em {n} vezes no cartão {brand}?",
            "Pode sim, {name}! R$ {amount} em {n} parcelas sem juros no {brand}, cada uma de "
            "R$ {part}.",
        ),
        (
            "Can I split R$ {amount} into {n} instalments on my {brand} card?",
            "Yes, {name}! R$ {amount} in {n} interest-free instalments on {brand}, each of "
            "R$ {part}.",
        ),
    ),
    "fees": (
        (
            "Qual é a taxa para vender no crédito à vista com {brand}?",
            "Olá {name}, a taxa no crédito à vista com {brand} é de {rate}% por transação, e o "
            "valor cai na sua conta em {days} dias.",
        ),
        (
            "What is the fee for a one-off credit sale with {brand}?",
            "Hello {name}, a one-off credit sale with {brand} costs {rate}% per transaction, "
            "and the money reaches your account in {days} days.",
        ),
    ),
    "fraud": (
        (
            "Recebi um alerta de fraude da compra {order} de R$ {amount}. Foi bloqueada?",
            "Sim, {name}. Bloqueamos a compra {order} de R$ {amount} e o cartão {brand} por "
            "precaução. Peça um cartão novo no app do {bank}.",
        ),
        (
            "I got a fraud alert for purchase {order} of R$ {amount}. Was it blocked?",
            "Yes, {name}. We blocked purchase {order} of R$ {amount} and the {brand} card as a "
            "precaution. Ask for a new card in the {bank} app.",
        ),
    ),
}

TOPICS = tuple(_TEMPLATES)
LANGUAGES = ("pt", "en")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One customer question and the agent's answer."""

    language: str
    topic: str
    question: str
    answer: str

    def messages(self) -> list[dict[str, str]]:
        """As chat messages, the shape ``tokenizer.apply_chat_template`` takes."""
        return [
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": self.answer},
        ]


def _amount(rng: random.Random) -> str:
    value = round(rng.uniform(9.9, 4999.0), 2)
    return f"{value:.2f}".replace(".", ",")


def _slots(rng: random.Random) -> dict[str, str]:
    amount = _amount(rng)
    n = rng.choice((2, 3, 4, 6, 10, 12))
    part = float(amount.replace(",", ".")) / n
    return {
        "name": rng.choice(NAMES),
        "order": f"#{rng.randint(10000, 99999)}",
        "amount": amount,
        "brand": rng.choice(BRANDS),
        "bank": rng.choice(BANKS),
        "date": f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}",
        "hour": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        "days": str(rng.choice((1, 2, 3, 5, 7, 10))),
        "n": str(n),
        "part": f"{part:.2f}".replace(".", ","),
        "rate": f"{rng.uniform(1.5, 4.9):.2f}".replace(".", ","),
    }


def generate(count: int, seed: int = 7) -> list[Exchange]:
    """``count`` exchanges, half in each language on average, all topics mixed."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    out: list[Exchange] = []
    for _ in range(count):
        topic = rng.choice(TOPICS)
        language = rng.choice(LANGUAGES)
        question, answer = _TEMPLATES[topic][LANGUAGES.index(language)]
        slots = _slots(rng)
        out.append(Exchange(language, topic, question.format(**slots), answer.format(**slots)))
    return out


def split(exchanges: list[Exchange], holdout: float) -> tuple[list[Exchange], list[Exchange]]:
    """Training and held-out exchanges (the last ``holdout`` fraction, at least one)."""
    cut = max(1, round(len(exchanges) * holdout))
    if cut >= len(exchanges):
        raise ValueError(f"{len(exchanges)} exchanges leave nothing to train on at {holdout=}")
    return exchanges[:-cut], exchanges[-cut:]
