"""Plausible people per country: names, national patient identifiers, institutions, radiologists.

National IDs follow each country's real format and check digits so that validators accept them;
Norway's use the synthetic-person convention (month + 80, as in the Norwegian test registry) so
they can never collide with a real person's number. Everything is drawn from the caller's
``random.Random``: same seed, same people.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["Person", "institutions", "national_id", "person", "radiologist"]

Sex = Literal["M", "F", "O"]

# family names, male given names, female given names
_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "FR": (
        ("Martin", "Bernard", "Dubois", "Durand", "Lefèvre", "Moreau", "Girard", "Fournier", "Mercier"),
        ("Louis", "Hugo", "Jules", "Mathéo", "Gabriel", "Arthur", "Raphaël"),
        ("Camille", "Léa", "Chloé", "Manon", "Inès", "Zoé", "Hélène"),
    ),
    "AT": (
        ("Gruber", "Huber", "Bauer", "Wagner", "Müller", "Pichler", "Steiner", "Moser", "Hofer"),
        ("Lukas", "Jakob", "Maximilian", "Felix", "Tobias", "Elias", "Jürgen"),
        ("Anna", "Lena", "Sophie", "Marie", "Hannah", "Johanna", "Jördis"),
    ),
    "NO": (
        ("Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Bakken", "Sæther"),
        ("Ole", "Jakob", "Emil", "Lars", "Håkon", "Magnus", "Bjørn"),
        ("Nora", "Ingrid", "Sofie", "Emma", "Solveig", "Åse", "Kari"),
    ),
    "DE": (
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"),
        ("Lukas", "Leon", "Finn", "Paul", "Jonas", "Jürgen"),
        ("Mia", "Emma", "Hannah", "Lea", "Sophie", "Käthe"),
    ),
    "IT": (
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci"),
        ("Francesco", "Alessandro", "Lorenzo", "Matteo", "Andrea", "Niccolò"),
        ("Sofia", "Giulia", "Aurora", "Alice", "Ginevra", "Beatrice"),
    ),
    "ES": (
        ("García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez"),
        ("Hugo", "Martín", "Lucas", "Mateo", "Pablo", "Álvaro"),
        ("Lucía", "Sofía", "Martina", "María", "Julia", "Paula"),
    ),
    "PT": (
        ("Silva", "Santos", "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues", "Martins"),
        ("João", "Rodrigo", "Martim", "Francisco", "Santiago", "Tomás"),
        ("Maria", "Leonor", "Matilde", "Beatriz", "Carolina", "Inês"),
    ),
    "NL": (
        ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer"),
        ("Daan", "Sem", "Lucas", "Levi", "Finn", "Bram"),
        ("Emma", "Julia", "Mila", "Tess", "Sophie", "Zoë"),
    ),
    "SE": (
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson"),
        ("William", "Liam", "Noah", "Hugo", "Lucas", "Åke"),
        ("Alice", "Maja", "Elsa", "Astrid", "Wilma", "Märta"),
    ),
    "PL": (
        ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski"),
        ("Antoni", "Jan", "Aleksander", "Franciszek", "Jakub", "Łukasz"),
        ("Zuzanna", "Julia", "Zofia", "Hanna", "Maja", "Małgorzata"),
    ),
}
_GENERIC = (
    ("Novak", "Horvat", "Kovač", "Papadopoulos", "Murphy", "Schmit", "Virtanen", "Nielsen"),
    ("Alex", "Daniel", "Martin", "Peter", "Thomas", "Adam"),
    ("Anna", "Maria", "Eva", "Laura", "Sara", "Elena"),
)
_INSTITUTIONS: dict[str, tuple[str, ...]] = {
    "FR": ("Centre Hospitalier Universitaire de Valmont", "Clinique Saint-Éloi de Valmont"),
    "AT": ("Landesklinikum Hochwald", "Privatklinik Am Mühlbach"),
    "NO": ("Fjellvik universitetssjukehus", "Sørvik sykehus"),
}


@dataclass(frozen=True)
class Person:
    family: str
    given: str
    sex: Sex
    birth_date: str  # YYYYMMDD


def person(
    rng: random.Random, country: str, *, sex: Sex | None = None, taken: frozenset[str] = frozenset()
) -> Person:
    """A person with a name typical of ``country``; ``taken`` family names are avoided while possible."""
    families, male, female = _NAMES.get(country, _GENERIC)
    chosen_sex: Sex = sex if sex is not None else rng.choice(("M", "F"))
    free = [f for f in families if f not in taken] or list(families)
    family = rng.choice(free)
    given = rng.choice(male if chosen_sex == "M" else female)
    year, month, day = rng.randrange(1940, 2005), rng.randrange(1, 13), rng.randrange(1, 29)
    return Person(family, given, chosen_sex, f"{year:04d}{month:02d}{day:02d}")


def radiologist(rng: random.Random, country: str) -> str:
    p = person(rng, country)
    return f"Dr {p.given} {p.family}"


def institutions(country: str, name: str) -> tuple[str, ...]:
    """Institution names for ``country`` (fictional); unknown countries get generic ones."""
    return _INSTITUTIONS.get(country, (f"{name} University Hospital", f"{name} Regional Hospital"))


def national_id(rng: random.Random, country: str, who: Person) -> str:
    """A national patient identifier in the country's format, with valid check digits."""
    if country == "FR":
        return _fr_nir(rng, who)
    if country == "AT":
        return _at_svnr(rng, who)
    if country == "NO":
        return _no_fnr(rng, who)
    return f"{country}{rng.randrange(10**8, 10**9)}"


def _fr_nir(rng: random.Random, who: Person) -> str:
    """French NIR (INS): sex, YY, MM, department, commune, order, then key = 97 - n mod 97."""
    department = rng.choice(("75", "69", "13", "33", "59", "67", "31", "44"))
    body = (
        f"{1 if who.sex == 'M' else 2}{who.birth_date[2:4]}{who.birth_date[4:6]}{department}"
        f"{rng.randrange(1, 1000):03d}{rng.randrange(1, 1000):03d}"
    )
    return f"{body}{97 - int(body) % 97:02d}"


def _at_svnr(rng: random.Random, who: Person) -> str:
    """Austrian social insurance number: serial (3), check digit, birth date DDMMYY (weights 3790584216)."""
    born = f"{who.birth_date[6:8]}{who.birth_date[4:6]}{who.birth_date[2:4]}"
    while True:
        serial = f"{rng.randrange(100, 1000)}"
        digits = [int(c) for c in serial + born]
        check = sum(w * d for w, d in zip((3, 7, 9, 5, 8, 4, 2, 1, 6), digits, strict=True)) % 11
        if check < 10:
            return f"{serial}{check}{born}"


def _no_fnr(rng: random.Random, who: Person) -> str:
    """Norwegian fødselsnummer of a synthetic person: DD (MM+80) YY, individual number, two mod-11 digits."""
    year = int(who.birth_date[:4])
    stem = f"{who.birth_date[6:8]}{int(who.birth_date[4:6]) + 80:02d}{who.birth_date[2:4]}"
    low, high = (0, 500) if year < 2000 else (500, 1000)
    while True:
        individual = rng.randrange(low, high)
        if individual % 2 != (1 if who.sex == "M" else 0):  # third digit: odd male, even female
            individual = individual + 1 if individual + 1 < high else individual - 1
        digits = [int(c) for c in f"{stem}{individual:03d}"]
        k1 = _mod11(digits, (3, 7, 6, 1, 8, 9, 4, 5, 2))
        if k1 is None:
            continue
        k2 = _mod11([*digits, k1], (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        if k2 is not None:
            return f"{stem}{individual:03d}{k1}{k2}"


def _mod11(digits: list[int], weights: tuple[int, ...]) -> int | None:
    k = 11 - sum(w * d for w, d in zip(weights, digits, strict=True)) % 11
    return 0 if k == 11 else None if k == 10 else k
