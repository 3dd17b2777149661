"""The support vocabulary of the knowledge base: stop words, phrases read as one intent, and words
of one concept. Chosen on the tuning questions only (docs/knowledge-base.md)."""

from __future__ import annotations

import re

# Function words only, so question words that carry intent in support ("where", "when") stay.
# Contractions appear without their apostrophe, as customers often type them.
_STOP_WORDS_TEXT = """
a about after again all also am an and any are as at be because been before being but by
can could did do does doing for from had has have having he her here hers him his how i if
in into is it its itself just me more most my myself no nor not of off on once only or other
our ours out over own please pls plz same she should so some such than that the their them
then there these they this those to too u ur very was we were what which while who whom why
will with would you your yours yourself hi hello hey thanks thank thx ok okay get got want
wanted need needs needed cant dont didnt doesnt wont isnt arent wasnt werent couldnt wouldnt
shouldnt havent hasnt im ive id youre youve thats whats hows theres let lets tell us
know help one now really actually still many yet something anything everything someone
anyone somebody anybody already ever even
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

# Phrases rewritten to one word before splitting, on questions and articles alike.
_PHRASES = (
    # Intents that live in word order rather than in any one word.
    (r"\b(?:cant|cannot|can not|dont|do not)\s+remember\b", "forgot"),
    (r"\b(?:cant|can not|couldnt|unable to|(?:wont|doesnt) let me)\b", "cannot"),
    (r"\bget(?:ting)?\s+in\s+touch\b", "contact"),
    (r"\bget(?:ting)?\s+in(?:to)?\b", "login"),
    (
        r"\b(?:never|not|didnt|did not|havent|have not|hasnt|has not)\s+(?:yet\s+)?"
        r"(?:got|gotten|get|receive[ds]?|arrive[ds]?|came|come|(?:show|turn)(?:s|ed)? up)\b",
        "notreceived",
    ),
    (
        r"\b(?:send|give|email)\s+me\s+(?:a copy of\s+)?(?:all\s+)?(?:the\s+|my\s+)?"
        r"(?:data|info|information|details)\b",
        "download data",
    ),
    (
        r"\bwhere(?:s| is| are)?\s+(?:my|the|our)\s+(?:\w+\s+)?"
        r"(?:order|parcel|package|stuff|delivery|shipment|items?|things?)\b",
        "track order",
    ),
    (r"\bhas\s+(?:my|the)\s+(?:\w+\s+)?(?:shipped|dispatched|been sent)\b", "track order"),
    (r"\btoo many\s+(?:e-?mails|messages|notifications|texts)\b", "unsubscribe"),
    (r"\bstop\s+(?:sending|emailing|texting|messaging)\b", "unsubscribe"),
    (
        r"\b(?:get|want|need|ask for|claim)\s+(?:my\s+|a\s+|the\s+)?(?:money back|refund)",
        "request refund",
    ),
    (r"\bhow (?:long|soon)\b", "time"),
    (r"\b(?:log|sign)(?:ged|ging|s)?[\s-]*(?:in|on)\b", "login"),
    (r"\b(?:log|sign)(?:ged|ging|s)?[\s-]*out\b", "logout"),
    (r"\bsign(?:ed|ing|s)?[\s-]*up\b", "signup"),
    (r"\b(?:2|two)[\s-]*(?:fa|factor|step)\b|\bmfa\b", "twofactor"),
    (r"\be-mail", "email"),
    (r"\bcheck[\s-]*out\b", "checkout"),
    (r"\bmoney[\s-]*back\b", "refund"),
    (r"\bsend(?:ing|s)?\s+(?:\w+\s+)?back\b", "return"),
    (r"\bwheres\b", "where"),
    (r"\bhow much\b", "price"),
    (r"\bopt(?:ed|ing|s)?[\s-]*out\b", "unsubscribe"),
)
PHRASES = tuple((re.compile(p), word) for p, word in _PHRASES)

# Words whose Snowball stem would merge them with a word of another meaning.
UNSTEMMED = {"personal": "personal"}

# Words customers use for a concept the articles name otherwise. Each group is one support
# concept; all its words are indexed as the group's first word. Kept to plain synonyms:
# a word with a second common meaning in the articles (charge, phone, open, lost) is not here.
SYNONYMS = (
    ("password", "pw", "pwd", "passwd", "passcode"),
    ("login", "signin", "logon"),
    ("signup", "register", "registration", "enrol", "enroll"),
    ("account", "profile", "acct"),
    ("parcel", "package", "shipment", "stuff"),
    ("refund", "reimburse", "reimbursement"),
    ("agent", "human", "person", "representative"),
    ("contact", "talk", "speak"),
    ("email", "mail", "mailbox"),
    ("price", "cost", "fee", "fees"),
    ("invoice", "receipt"),
    ("promo", "coupon", "discount", "voucher"),
    ("ship", "shipping", "deliver", "delivery"),
    ("carrier", "courier"),
    ("international", "internationally", "abroad", "overseas", "worldwide"),
    ("exchange", "swap"),
    ("keep", "retain", "retention"),
    ("change", "switch", "modify", "edit", "alter"),
    ("delete", "erase"),
    ("damaged", "broken", "crushed", "smashed", "cracked", "shattered"),
    ("verify", "verification", "verified", "verifying"),
    ("membership", "subscription"),
    ("colour", "color"),
    ("quick", "quickly", "fast", "faster", "fastest"),
    ("data", "info", "information"),
)
