"""A synthetic omnichannel retailer with known ground truth: ``cxpredict generate``.

The story of the world
----------------------
Customers sign up over time (most before the window, the rest during it, at a growing pace).
Each has latent traits: a base purchase rate and basket value (heavy-tailed), category tastes,
a price sensitivity, a browsing engagement level that drifts up or down year by year, a channel
mix (online / store / app), a base satisfaction, a proneness to service incidents and a frailty.

*Purchases* arrive as a Poisson process whose daily rate is the customer's rate × yearly season
(December peak, February trough) × weekday (Saturday peak) × a promotion lift that only the
price-sensitive feel. The category of each purchase is drawn from the customer's mix, which
does not change over time. *Browsing sessions* (web or app) arrive likewise with the drifting
engagement; each session focuses on one category, always shows a product view of it, and may
add searches, wishlist adds, cart adds and abandoned checkouts. Online and app purchases also
leave a checkout session.

*Latent needs*: a customer may need up to two categories they do not yet buy. Needs pull
browsing towards that category. When the assortment serves the need (a per-category coverage
chance), it also adds purchases there; when it does not, the need stays *unmet*: searches,
product views and wishlist adds, never a purchase in that category, now and then an
``availability`` ticket, and a higher churn hazard.

*Service*: incidents (at most one a day) open tickets; some are handled well, the others are
left unresolved or resolved badly with a low satisfaction score and negative sentiment. Each of
a customer's first four incidents permanently lowers satisfaction (a bad one much more), which
shows in NPS/CSAT scores and raises the churn hazard.

*Churn*: every day a customer who is still active may start to leave with a hazard of
``exp(baseline + frailty + satisfaction loss + unmet needs − engagement + newness)``. Once that
happens, all activity fades linearly over ``decline_days`` (42) to 15 %, after which the
customer is silent for good: no purchases, sessions, surveys or tickets (campaigns are still
sent; nobody opens them). ``churn_at`` in the truth is the first silent day.

Marketing sends a campaign every week to consenting customers; opens and clicks follow
engagement; unsubscribes rise with dissatisfaction and withdraw marketing consent. A few percent
of customers never grant, or later withdraw, profiling consent.

With ``--campaigns``, past campaigns assign the catalogue's actions at random, with effects that
differ from customer to customer and that the truth knows exactly
(:mod:`features.synthetic.campaign_history`): what uplift models learn from and are judged against.

Raw sources contain identifier-only rows (events keyed by device, store receipts by loyalty
card, email rows by address), a few family inboxes shared by two customers, ~0.4 % corrupted
copies per source and ~0.1 % exact duplicates; the truth records how many of each.

The oracle
----------
:func:`oracle_probabilities` recomputes, from the truth and the state at a cutoff (latents,
sign-up, incidents so far, whether the fade-out has begun), the exact probability of every label
over the horizon, integrating over future incidents and fade-out onsets; it never looks at
realised future draws. :func:`realised_labels` reads the generated raw files for comparison.
"""

from features.synthetic.config import CATEGORIES, SOURCES, CampaignHistory, Dynamics, Shift, WorldConfig
from features.synthetic.generator import GenerateSummary, generate
from features.synthetic.oracle import oracle_probabilities, realised_labels
from features.synthetic.truth import Truth, load_truth

__all__ = [
    "CATEGORIES",
    "CampaignHistory",
    "SOURCES",
    "Dynamics",
    "GenerateSummary",
    "Truth",
    "Shift",
    "WorldConfig",
    "generate",
    "load_truth",
    "oracle_probabilities",
    "realised_labels",
]
