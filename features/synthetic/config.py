"""Configuration of a synthetic world: its size, its time window and the laws that drive it.

Everything the oracle needs to recompute the daily intensities lives here and is saved in
``truth/world.json``, so the simulation and the oracle read the very same numbers.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import SOURCES  # noqa: F401  (re-exported for the generator modules)

CATEGORIES: tuple[str, ...] = (
    "electronics",
    "home",
    "fashion",
    "beauty",
    "sports",
    "grocery",
    "toys",
    "books",
)


def _today_utc() -> date:
    return datetime.now(timezone.utc).date()


class Dynamics(BaseModel):
    """The laws of the world. Rates are per day unless the name says otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # purchases
    purchases_per_year: float = Field(5.0, gt=0, description="mean base purchase rate")
    purchase_rate_shape: float = Field(1.3, gt=0, description="gamma shape: lower = more heterogeneous")
    basket_log_mean: float = 3.7
    basket_log_sd: float = 0.55
    promo_lift: float = Field(
        2.5, ge=0, description="extra purchase rate at full price sensitivity in a promo"
    )
    category_popularity: tuple[float, ...] = (0.12, 0.15, 0.18, 0.12, 0.09, 0.16, 0.08, 0.10)
    category_price: tuple[float, ...] = (3.0, 1.6, 1.0, 0.7, 1.3, 0.6, 0.8, 0.45)
    preference_concentration: float = Field(3.0, gt=0, description="Dirichlet total: lower = pickier")
    return_rate: tuple[float, ...] = (0.05, 0.04, 0.12, 0.03, 0.06, 0.005, 0.04, 0.02)
    # engagement
    sessions_per_year: float = Field(7.0, gt=0, description="median base browsing-session rate")
    engagement_log_sd: float = 0.8
    engagement_drift_mean: float = -0.05
    engagement_drift_sd: float = 0.35
    engagement_drift_cap: float = Field(1.0, gt=0, description="|drift| per year is clipped to this")
    # latent needs
    need_count_probabilities: tuple[float, float, float] = (0.5, 0.35, 0.15)
    need_browse_weight: float = Field(1.2, gt=0, description="browse weight of a need of intensity 1")
    need_purchase_rate_per_year: float = Field(2.0, ge=0, description="extra purchases of a served need")
    assortment_coverage: tuple[float, ...] = (0.45, 0.6, 0.75, 0.7, 0.4, 0.85, 0.5, 0.8)
    # service and satisfaction
    satisfaction_mean: float = 0.72
    satisfaction_sd: float = 0.12
    incidents_per_year: float = Field(0.8, ge=0)
    incident_rate_shape: float = Field(1.5, gt=0)
    bad_incident_alpha: float = 2.0
    bad_incident_beta: float = 5.0
    handled_drop: float = Field(0.04, ge=0, description="satisfaction lost by a well handled incident")
    bad_drop: float = Field(0.18, ge=0, description="satisfaction lost by an unresolved/badly resolved one")
    incident_memory: int = Field(4, ge=1, le=8, description="only the first N incidents lower satisfaction")
    # churn
    churn_per_year: float = Field(0.13, gt=0, description="decline-onset hazard of an average customer")
    frailty_sd: float = 0.5
    satisfaction_effect: float = Field(4.0, ge=0, description="log-hazard per unit of lost satisfaction")
    unmet_need_effect: float = Field(0.6, ge=0, description="log-hazard per unmet need")
    engagement_effect: float = Field(0.45, ge=0, description="log-hazard per unit of -log engagement")
    new_customer_excess: float = Field(1.5, ge=0, description="extra hazard factor at tenure 0")
    new_customer_days: float = Field(120.0, gt=0)
    decline_days: int = Field(42, ge=1, description="length of the fade-out before going silent")
    decline_floor: float = Field(0.15, ge=0, lt=1, description="activity multiplier on the last fade day")
    # marketing, surveys, support
    campaign_every_days: int = Field(7, ge=1)
    marketing_consent_share: float = Field(0.65, ge=0, le=1)
    late_marketing_grant_share: float = Field(0.12, ge=0, le=1)
    profiling_denied_share: float = Field(0.025, ge=0, le=1)
    profiling_withdrawn_share: float = Field(0.015, ge=0, le=1)
    open_probability: float = Field(0.3, ge=0, le=1)
    click_probability: float = Field(0.18, ge=0, le=1)
    unsubscribe_probability: float = Field(0.004, ge=0, le=1)
    csat_per_purchase: float = Field(0.1, ge=0, le=1)
    nps_per_session: float = Field(0.025, ge=0, le=1)
    availability_ticket_per_need_session: float = Field(0.05, ge=0, le=1)
    # identities and data quality
    app_user_share: float = Field(0.6, ge=0, le=1)
    loyalty_card_share: float = Field(0.7, ge=0, le=1)
    shared_email_share: float = Field(0.004, ge=0, le=0.5, description="customers given another's email")
    anonymous_event_share: float = Field(0.05, ge=0, le=1, description="events keyed by device id only")
    anonymous_store_share: float = Field(0.25, ge=0, le=1, description="store purchases keyed by card only")
    email_only_marketing_share: float = Field(0.1, ge=0, le=1, description="email rows keyed by email only")
    pre_window_signup_share: float = Field(0.65, ge=0, le=1)
    pre_window_signup_years: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _per_category_lengths(self) -> Dynamics:
        for name in ("category_popularity", "category_price", "return_rate", "assortment_coverage"):
            if len(getattr(self, name)) != len(CATEGORIES):
                raise ValueError(f"{name} needs one value per category ({len(CATEGORIES)})")
        if abs(sum(self.need_count_probabilities) - 1.0) > 1e-9:
            raise ValueError("need_count_probabilities must sum to 1")
        return self


class Shift(BaseModel):
    """A change of behaviour from ``start`` on, for the customers acquired through ``channels`` (a
    stand-in for the region where a competitor opens): their purchase intensity is multiplied by
    ``purchase`` and their browsing-session intensity by ``sessions``.

    The oracle reads the same shift from ``truth/world.json``, so its probabilities stay the
    world's true ones after the change; monitoring and retraining are judged on such a world.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: date
    channels: tuple[str, ...] = ("organic", "store")
    purchase: float = Field(0.35, gt=0, le=10)
    sessions: float = Field(0.5, gt=0, le=10)

    @model_validator(mode="after")
    def _known_channels(self) -> Shift:
        from features.synthetic.world import ACQUISITION_CHANNELS

        unknown = sorted(set(self.channels) - set(ACQUISITION_CHANNELS))
        if unknown or not self.channels:
            raise ValueError(
                f"shift channels must be among {', '.join(ACQUISITION_CHANNELS)}; got {', '.join(unknown) or 'none'}"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> Shift:
        """``start=YYYY-MM-DD[,channels=a+b][,purchase=x][,sessions=y]``, as the command line takes it."""
        values: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"shift: expected key=value, got {part!r}")
            values[key.strip()] = tuple(value.split("+")) if key.strip() == "channels" else value.strip()
        return cls.model_validate(values)


class CampaignHistory(BaseModel):
    """Past campaigns of the world: randomised next-best actions with known, heterogeneous effects.

    On the first day of each of the last ``waves`` months whose horizon ends inside the window, a
    random ``reach`` share of the customers signed up by then is assigned at random to the control
    group (``control_share``) or to one of the actions (equal shares of the rest). An action can
    *persuade* a customer who would not have bought in the next ``horizon_days`` (one extra online
    purchase) or *put off* one who would have (the horizon's purchases disappear), with rates that
    depend on the customer's state at the wave (see ``features.synthetic.campaign_history``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    waves: int = Field(12, ge=1, le=36)
    reach: float = Field(0.5, gt=0, le=1)
    control_share: float = Field(0.3, gt=0, lt=1)
    horizon_days: int = Field(28, ge=7, le=28, description="at most 28: two waves' horizons never overlap")
    retention_offer_rate: float = Field(0.5, ge=0, le=1, description="× price sensitivity")
    callback_rate_per_bad_incident: float = Field(0.25, ge=0, le=1)
    callback_rate_cap: float = Field(0.5, ge=0, le=1)
    cross_sell_rate_per_unmet_need: float = Field(0.2, ge=0, le=1)
    cross_sell_rate_cap: float = Field(0.4, ge=0, le=1)
    win_back_rate_fading: float = Field(0.5, ge=0, le=1, description="while the customer fades out")
    win_back_rate_other: float = Field(0.02, ge=0, le=1)
    reacts_badly_share: float = Field(0.06, ge=0, le=1, description="hidden trait: marketing puts them off")
    put_off_rate: float = Field(0.35, ge=0, le=1)
    offer_discount: float = Field(0.15, ge=0, lt=1, description="discount of an offer's extra purchase")
    quiet_days: int = Field(
        0, ge=0, description="the window's last days hold no wave (the days a simulation decides itself)"
    )


class WorldConfig(BaseModel):
    """Size, seed and window of a world. The window is the ``days`` days before ``end`` at 00:00 UTC.

    ``end`` is exclusive: the history covers the days ``end - days`` … ``end - 1``, so with the
    default (today) no generated fact lies in the future of the moment it is generated.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: int = Field(..., ge=10)
    seed: int = 1
    days: int = Field(730, ge=30)
    end: date = Field(default_factory=_today_utc)
    chunk_size: int = Field(
        20_000, ge=100, description="customers simulated together (fixed: output depends on it)"
    )
    malformed_share: float = Field(0.004, ge=0, le=0.05)
    duplicate_share: float = Field(0.001, ge=0, le=0.05)
    dynamics: Dynamics = Field(default_factory=Dynamics)
    shift: Shift | None = None
    campaign_history: CampaignHistory | None = None

    @model_validator(mode="after")
    def _shift_in_window(self) -> WorldConfig:
        if self.shift is not None and not (
            self.end - timedelta(days=self.days) < self.shift.start < self.end
        ):
            raise ValueError("shift.start must lie inside the generated window")
        return self

    @property
    def start_at(self) -> datetime:
        """First instant of the window (UTC)."""
        return self.end_at - timedelta(days=self.days)

    @property
    def end_at(self) -> datetime:
        """Exclusive end of the window (UTC midnight of ``end``)."""
        return datetime.combine(self.end, time(0), tzinfo=timezone.utc)

    @property
    def start_epoch_day(self) -> int:
        """Day number since 1970-01-01 of the window's first day: the simulation's day 0."""
        return (self.end - date(1970, 1, 1)).days - self.days
