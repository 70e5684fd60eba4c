"""Sample publish requests for ``livefeed demo``: a steady stream of stories and activity.

Pure and deterministic: every random choice is drawn from the ``random.Random`` passed in, so
one seed always gives the same stream. No I/O here; the demo command paces and publishes.

The people and companies are invented; tool names are real, but every story is made up
(numbers included), describes the author's own team, and links to a reserved ``.example``
domain. Nothing in this module claims that a real project shipped or broke anything.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

__all__ = ["TOOLS", "TOOL_NAMES", "demo_requests"]

# Topic groups: templates and people name groups, never single tools, so stories stay on topic.
_GROUPS: dict[str, dict[str, str]] = {
    "python_web": {"flask": "Flask", "django": "Django", "fastapi": "FastAPI"},
    "frontend": {"react": "React", "vue": "Vue.js", "svelte": "Svelte", "nextjs": "Next.js"},
    "frontend_tooling": {"typescript": "TypeScript", "vite": "Vite"},
    "languages": {"python": "Python", "go": "Go", "rust": "Rust", "nodejs": "Node.js"},
    "cloud": {
        "amazon-web-services": "Amazon Web Services",
        "google-cloud": "Google Cloud",
        "microsoft-azure": "Microsoft Azure",
    },
    "iac": {
        "terraform": "Terraform",
        "terragrunt": "Terragrunt",
        "pulumi": "Pulumi",
        "ansible": "Ansible",
    },
    "containers": {
        "kubernetes": "Kubernetes",
        "docker": "Docker",
        "helm": "Helm",
        "podman": "Podman",
    },
    "ci": {"jenkins": "Jenkins", "github-actions": "GitHub Actions", "gitlab-ci": "GitLab CI"},
    "delivery": {"argo-cd": "Argo CD"},
    "edge": {"nginx": "nginx", "caddy": "Caddy", "haproxy": "HAProxy", "envoy": "Envoy"},
    "observability": {
        "prometheus": "Prometheus",
        "grafana": "Grafana",
        "grafana-loki": "Grafana Loki",
        "opentelemetry": "OpenTelemetry",
        "jaeger": "Jaeger",
    },
    "databases": {
        "postgresql": "PostgreSQL",
        "mysql": "MySQL",
        "mongodb": "MongoDB",
        "clickhouse": "ClickHouse",
    },
    "embedded": {"sqlite": "SQLite"},  # apart from "databases": no terabyte migrations to it
    "search": {"elasticsearch": "Elasticsearch", "opensearch": "OpenSearch"},
    "messaging": {
        "redis": "Redis",
        "kafka": "Apache Kafka",
        "rabbitmq": "RabbitMQ",
        "nats": "NATS",
    },
    "task_queues": {"celery": "Celery"},
}

TOOL_NAMES: dict[str, str] = {
    slug: name for group in _GROUPS.values() for slug, name in group.items()
}
TOOLS: tuple[str, ...] = tuple(TOOL_NAMES)

# The tools each area of work touches (a pool, see _pool): picks story authors by area and
# an actor's usual tools.
_AREAS: dict[str, str] = {
    "platform": "cloud|iac|containers|ci|delivery|edge",
    "backend": "python_web|languages|messaging|task_queues|databases|embedded",
    "data": "databases|search|messaging",
    "frontend": "frontend|frontend_tooling|nodejs",
    "sre": "observability|containers|edge",
}


class _Person(NamedTuple):
    handle: str
    name: str
    role: str
    company: str
    areas: tuple[str, ...]


_CAST: tuple[_Person, ...] = (
    _Person(
        "mara_okafor", "Mara Okafor", "Site Reliability Engineer", "Quillstone", ("sre", "platform")
    ),
    _Person(
        "dvelasquez", "Diego Velásquez", "Staff Backend Engineer", "Pebblecart", ("backend", "data")
    ),
    _Person("ines.kowalczyk", "Inês Kowalczyk", "Frontend Lead", "Lanternfish", ("frontend",)),
    _Person("tobi-adeyemi", "Tobi Adeyemi", "Platform Engineer", "Okapi Freight", ("platform",)),
    _Person(
        "hsato", "Hana Sato", "Database Reliability Engineer", "Bluefin Analytics", ("data", "sre")
    ),
    _Person(
        "priya.raman", "Priya Raman", "Engineering Manager", "Harborlight", ("backend", "platform")
    ),
    _Person("jonas_lind", "Jonas Lindqvist", "DevOps Engineer", "Tallowgrid", ("platform",)),
    _Person(
        "aoife.byrne", "Aoife Byrne", "Security Engineer", "Kestrel Pay", ("platform", "backend")
    ),
    _Person("kmensah", "Kwame Mensah", "Data Engineer", "Stratawell", ("data",)),
    _Person(
        "lucia-ferri", "Lucia Ferri", "Full-Stack Developer", "Juniper Row", ("frontend", "backend")
    ),
    _Person("wen_zhao", "Wen Zhao", "Observability Engineer", "Cobalt Orchard", ("sre",)),
    _Person("samir.haddad", "Samir Haddad", "Backend Developer", "Fernhook", ("backend",)),
    _Person("nkarlsson", "Nora Karlsson", "Cloud Architect", "Mossbank Health", ("platform",)),
    _Person(
        "rafa_moreno", "Rafael Moreno", "Senior Python Developer", "Brindle Labs", ("backend",)
    ),
    _Person("emeka.obi", "Emeka Obi", "Release Engineer", "Saltmarsh Games", ("platform",)),
    _Person("yuki-tanabe", "Yuki Tanabe", "UI Engineer", "Pebblecart", ("frontend",)),
    _Person("greta.vogel", "Greta Vogel", "Staff SRE", "Ridgeway Transit", ("sre", "platform")),
    _Person(
        "ashwin_k",
        "Ashwin Krishnan",
        "Principal Engineer",
        "Bluefin Analytics",
        ("data", "backend"),
    ),
    _Person(
        "lami.adeleke",
        "Olamide Adeleke",
        "Developer Advocate",
        "Lanternfish",
        ("frontend", "backend"),
    ),
    _Person("mpiatek", "Marek Piątek", "Infrastructure Engineer", "Quillstone", ("platform",)),
    _Person("sofia_rey", "Sofía Rey", "Backend Engineer", "Okapi Freight", ("backend", "data")),
    _Person(
        "cj-brennan",
        "CJ Brennan",
        "Developer Experience Engineer",
        "Harborlight",
        ("platform", "frontend"),
    ),
    _Person("leila.navabi", "Leila Navabi", "Data Platform Lead", "Juniper Row", ("data",)),
    _Person("tomasz_w", "Tomasz Wróbel", "Site Reliability Engineer", "Kestrel Pay", ("sre",)),
    _Person(
        "binh.tran", "Binh Tran", "Software Engineer", "Saltmarsh Games", ("backend", "frontend")
    ),
    _Person("ruthm", "Ruth Mwangi", "Engineering Lead", "Mossbank Health", ("backend", "platform")),
    _Person(
        "felix_braun", "Felix Braun", "Performance Engineer", "Tallowgrid", ("backend", "data")
    ),
    _Person("ana-lopes", "Ana Lopes", "Frontend Developer", "Fernhook", ("frontend",)),
    _Person("ike.nwosu", "Ikenna Nwosu", "Platform Team Lead", "Stratawell", ("platform", "sre")),
    _Person("zoechen", "Zoe Chen", "Software Engineer", "Brindle Labs", ("backend", "frontend")),
    _Person(
        "matteo.russo", "Matteo Russo", "Cloud Engineer", "Cobalt Orchard", ("platform", "data")
    ),
    _Person(
        "helga_g", "Helga Gunnarsdóttir", "Staff Engineer", "Ridgeway Transit", ("data", "backend")
    ),
)


class _Template(NamedTuple):
    area: str  # who writes it: a key of _AREAS, or "any"
    slots: tuple[str, ...]  # one pool per {a}/{b}/{c}: "group|tool|..." or "*" for any tool
    extra: str  # pool for 0-2 related tools that are tagged but not named; "" for none
    title: str
    body: str  # one or two sentences; a closing sentence may follow
    tags: tuple[str, ...]


_T = _Template
_TEMPLATES: tuple[_Template, ...] = (
    # migrations
    _T(
        "platform",
        ("ci", "ci"),
        "containers",
        "Migrating {n} services from {a} to {b}: what broke",
        "It took {weeks} weeks to move every pipeline at {company}. Build caching, secret scoping "
        "and a handful of order-dependent tests gave us the most trouble.",
        ("migration", "ci"),
    ),
    _T(
        "backend",
        ("python_web", "python_web"),
        "databases",
        "From {a} to {b}: porting our oldest API without downtime",
        "We ran both stacks behind one router and shifted traffic an endpoint at a time. The "
        "hardest part was matching the old error responses byte for byte.",
        ("migration", "api"),
    ),
    _T(
        "data",
        ("databases", "databases"),
        "messaging",
        "Moving {n} TB from {a} to {b} with dual writes and a lot of patience",
        "Dual writes got us most of the way; the backfill and a consistency checker did the rest. "
        "This is the order we would do it in next time.",
        ("migration", "data"),
    ),
    _T(
        "platform",
        ("edge", "edge"),
        "containers",
        "Swapping {a} for {b} in front of {n} microservices",
        "Translating the config was mostly mechanical. Timeouts, retry budgets and header "
        "handling were not, and each showed up as a different kind of 502.",
        ("networking", "migration"),
    ),
    _T(
        "frontend",
        ("frontend", "frontend"),
        "frontend_tooling",
        "Rewriting our dashboard from {a} to {b}, one route at a time",
        "Both apps shared a shell for {weeks} weeks while we moved screens across. The bundle "
        "shrank {pct}% and nobody had to freeze feature work.",
        ("frontend", "migration"),
    ),
    _T(
        "platform",
        ("terraform", "terragrunt"),
        "cloud",
        "Breaking one giant {a} state into {few} stacks with {b}",
        "Plans used to take {mins} minutes and every change touched everything. Now most plans "
        "finish in under a minute and the blast radius is one team.",
        ("iac", "refactoring"),
    ),
    _T(
        "backend",
        ("python|nodejs", "go|rust"),
        "",
        "Rewriting a hot path from {a} to {b}: was it worth it?",
        "The service carries most of the checkout traffic at {company}. CPU use fell {pct}%, but "
        "build times and onboarding cost more than we planned for.",
        ("performance", "rewrite"),
    ),
    # incident write-ups
    _T(
        "sre",
        ("databases|messaging", "prometheus|grafana"),
        "",
        "Postmortem: the {a} slowdown our {b} alerts missed",
        "For {mins} minutes latency climbed while every dashboard stayed green. The alert watched "
        "averages; the damage was in the tail.",
        ("incident", "postmortem", "alerting"),
    ),
    _T(
        "backend",
        ("databases",),
        "python_web",
        "The {a} connection pool that took checkout down for {mins} minutes",
        "A deploy doubled our workers but not the server-side connection limit. Requests queued, "
        "retries piled on, and the rest is in the timeline.",
        ("incident", "postmortem"),
    ),
    _T(
        "platform",
        ("kubernetes",),
        "cloud|helm",
        "Incident review: a {a} node pool upgrade that went sideways",
        "A surge setting we never touched met a disruption budget nobody remembered. {n} pods sat "
        "pending for most of an afternoon.",
        ("incident", "upgrades"),
    ),
    _T(
        "sre",
        ("observability|search|edge",),
        "",
        "How one {a} config change filled our disks overnight",
        "A debug flag rode along with a routine change. By morning the volume was full and the "
        "on-call engineer had a long first coffee.",
        ("incident", "logging"),
    ),
    _T(
        "data",
        ("messaging",),
        "observability",
        "A week of {a} on-call: {n} pages and what they taught us",
        "Nearly every page traced back to consumer lag that no team owned. We wrote down who owns "
        "what, then deleted half the alerts.",
        ("on-call", "reliability"),
    ),
    # tutorials
    _T(
        "backend",
        ("python_web|nodejs|go", "grafana-loki|opentelemetry"),
        "",
        "Structured logging in {a} with {b}, step by step",
        "Start with one logger, one format and a request id on every line. The post walks through "
        "the setup and the queries we really run.",
        ("tutorial", "logging"),
    ),
    _T(
        "platform",
        ("python_web", "kubernetes"),
        "helm|argo-cd",
        "Zero-downtime deploys for {a} apps on {b}",
        "Readiness probes, graceful shutdown and connection draining each fix a different dropped "
        "request. We cover all three with manifests that work.",
        ("tutorial", "deploys"),
    ),
    _T(
        "platform",
        ("terraform",),
        "terragrunt|cloud",
        "Writing {a} modules that other teams actually reuse",
        "Small inputs, boring defaults and examples that run in CI. This is how our shared library "
        "grew to {n} modules without a rewrite.",
        ("tutorial", "iac"),
    ),
    _T(
        "backend",
        ("python_web", "celery|rabbitmq|redis"),
        "",
        "Background jobs in {a}: {b} or a plain queue table?",
        "At a few hundred jobs a minute a database table is fine. Past that, retries, visibility "
        "timeouts and fan-out make a real broker worth running.",
        ("tutorial", "queues"),
    ),
    _T(
        "frontend",
        ("frontend",),
        "frontend_tooling",
        "Testing {a} components without mocking the world",
        "Render the real component, fake only the network, and assert on what the user sees. Our "
        "suite got faster and stopped breaking on refactors.",
        ("tutorial", "testing"),
    ),
    _T(
        "platform",
        ("kubernetes", "go|rust|python"),
        "helm",
        "Writing your first {a} operator in {b}",
        "An operator is a loop comparing what you asked for with what exists. We build one for "
        "database users, from an empty repo to a working reconcile.",
        ("tutorial", "operators"),
    ),
    _T(
        "frontend",
        ("frontend", "typescript"),
        "vite",
        "Type-safe API clients for {a} with {b} and no hand-written types",
        "Generate the types from the OpenAPI schema, wrap fetch once, and let the compiler catch "
        "renamed fields before users do.",
        ("tutorial", "types"),
    ),
    _T(
        "sre",
        ("python_web|nodejs", "databases|messaging", "opentelemetry|jaeger"),
        "",
        "Tracing one request from {a} through {b} with {c}",
        "Auto-instrumentation gave us spans; propagating context across the queue gave us traces. "
        "These are the few lines that join the two.",
        ("tutorial", "tracing"),
    ),
    _T(
        "data",
        ("databases", "redis"),
        "",
        "Caching {a} query results in {b}: the patterns that held up",
        "Read-through with short TTLs covered most cases. For the rest we invalidate on write and "
        "accept a little staleness.",
        ("caching", "performance"),
    ),
    _T(
        "sre",
        ("grafana",),
        "prometheus|grafana-loki",
        "Dashboards that matter: the {few} {a} panels we kept after the cleanup",
        "We started with {n} dashboards nobody trusted. Every panel we kept answers a question "
        "someone asks during an incident.",
        ("dashboards", "observability"),
    ),
    # benchmarks
    _T(
        "backend",
        ("python_web", "python_web"),
        "",
        "Benchmarking {a} and {b} at {k}k requests per second",
        "Same app, same database, same hardware. The gap was smaller than forum threads suggest, "
        "and most of it came from serialization.",
        ("benchmark", "performance"),
    ),
    _T(
        "data",
        ("databases|search", "databases|search"),
        "",
        "{a} vs. {b} for analytics queries: a {n}-million-row benchmark",
        "We ran the same twelve queries cold and warm. One engine won on scans, the other on point "
        "lookups; the full table is in the post.",
        ("benchmark", "analytics"),
    ),
    _T(
        "backend",
        ("languages", "languages"),
        "",
        "Cold starts, memory and p99 latency: {a} and {b} side by side",
        "We built the same small service twice and put both behind one load balancer. Results, "
        "scripts and caveats inside.",
        ("benchmark", "latency"),
    ),
    _T(
        "data",
        ("databases|messaging|search", "cloud"),
        "",
        "How fast is {a} on ARM? Numbers from our {b} fleet",
        "Moving to ARM instances cut our bill by {pct}%. Throughput held for most workloads, with "
        "one surprise in compression.",
        ("benchmark", "arm", "cost"),
    ),
    _T(
        "sre",
        ("edge|messaging",),
        "",
        "We load-tested {a} until it fell over",
        "We pushed one node past {k}k requests per second. The first thing to break was not the "
        "one we had bet on.",
        ("load-testing", "performance"),
    ),
    # release notes
    _T(
        "any",
        ("*",),
        "",
        "What's new in the latest {a} release, and what it means for upgrades",
        "A short tour of the changes our team cares about, the deprecations to plan for, and what "
        "we will test first before rolling it out.",
        ("release", "upgrades"),
    ),
    _T(
        "backend",
        ("python_web|frontend|languages",),
        "",
        "Upgrading to the newest {a}: the deprecations that bit us",
        "Most of the upgrade was a version bump. Three warnings we had ignored for a year became "
        "errors, and this is how we fixed each.",
        ("upgrades", "release"),
    ),
    _T(
        "any",
        ("*", "*", "*"),
        "",
        "Upgrade week: moving {a}, {b} and {c} to their latest releases",
        "Release highlights, breaking changes and our upgrade notes in one place. Skim the summary "
        "at the top if you only have a minute.",
        ("release", "upgrades"),
    ),
    _T(
        "any",
        ("*",),
        "",
        "I read the {a} changelog so you don't have to",
        "Most entries are fixes you will never notice. These are the {few} that change how we "
        "configure and deploy it.",
        ("release", "changelog"),
    ),
    # security advisories
    _T(
        "platform",
        ("edge|containers|ci|delivery",),
        "",
        "Auditing our {a} setup: the checklist we run after every advisory",
        "Most advisories turn out not to affect us, but the last audit still found two older "
        "problems. The checklist is short enough to run every quarter.",
        ("security", "checklist"),
    ),
    _T(
        "platform",
        ("ci",),
        "",
        "Secrets in {a} pipelines: how we stopped leaking tokens into logs",
        "Masking catches the obvious cases. Short-lived credentials and scoped runners catch the "
        "rest, and are simpler than they sound.",
        ("security", "secrets", "ci"),
    ),
    _T(
        "data",
        ("databases|messaging|search", "cloud"),
        "",
        "Locking down {a} in a shared {b} account",
        "Private networking, per-service credentials and audit logs on by default. We also list "
        "what we chose not to do, and why.",
        ("security", "cloud"),
    ),
    _T(
        "backend",
        ("python|nodejs|rust|go",),
        "github-actions|gitlab-ci",
        "Supply-chain hygiene for {a} projects: pin, sign, scan",
        "Lockfiles with hashes, signed release artifacts and a dependency scan that fails the "
        "build. None of it is new; doing all three is.",
        ("security", "supply-chain"),
    ),
    _T(
        "platform",
        ("terraform|pulumi", "cloud"),
        "",
        "Least-privilege {b} permissions for {a}, generated from real usage",
        "We recorded which API calls each pipeline made for {weeks} weeks, then generated policies "
        "from the log. The broad admin roles are gone.",
        ("security", "iam"),
    ),
    # conference talks
    _T(
        "any",
        ("*",),
        "",
        "Talk recap: running {a} in production without losing sleep",
        "The slides and recording are up. The short version: fewer knobs, better defaults, and "
        "alerts that someone has agreed to answer.",
        ("conference", "talk"),
    ),
    _T(
        "any",
        ("*",),
        "",
        "Slides and video: {few} lessons from a year of {a} at {company}",
        "What worked, what we undid, and what we would tell a team starting today. Audience "
        "questions are answered at the end.",
        ("conference", "lessons"),
    ),
    _T(
        "any",
        ("*",),
        "",
        "Hallway-track notes: what people are really building with {a}",
        "Between sessions we asked everyone the same three questions. The answers were more "
        "varied, and more practical, than the talks.",
        ("conference", "community"),
    ),
    _T(
        "any",
        ("*", "*"),
        "",
        "Lightning talk: {a} and {b} in five minutes",
        "One demo, and no slides after the second minute. The demo repo is public if you want to "
        "poke at it.",
        ("conference", "lightning-talk"),
    ),
    _T(
        "platform",
        ("kubernetes|kafka|elasticsearch|opensearch|clickhouse|nats", "cloud"),
        "",
        "Workshop write-up: from zero to a running {a} cluster on {b}",
        "Attendees went from an empty account to a working cluster in ninety minutes. Here are the "
        "steps, and the three places people got stuck.",
        ("workshop", "conference"),
    ),
    _T(
        "platform",
        ("ci",),
        "",
        "Show and tell: a small {a} bot that files our flaky tests",
        "It reruns a failure once, opens an issue when a test flips, and pings whoever touched it "
        "last. Flaky reruns dropped {pct}%.",
        ("testing", "ci", "show-and-tell"),
    ),
)

# An optional last sentence, so bodies run one to three sentences.
_CLOSERS: tuple[str, ...] = (
    "The full write-up has config snippets and a timeline.",
    "Corrections and war stories are welcome in the comments.",
    "Scripts and configs are linked at the end of the post.",
    "Thanks to everyone on the team who reviewed the drafts.",
    "A follow-up on what we would change is in the works.",
)

# Related tools that one person tends to adopt together, for bursts of started_using.
_STACKS: tuple[tuple[str, ...], ...] = (
    ("amazon-web-services", "terraform", "terragrunt", "kubernetes", "helm", "argo-cd"),
    ("prometheus", "grafana", "grafana-loki", "opentelemetry", "jaeger"),
    ("flask", "postgresql", "redis", "celery", "docker", "nginx"),
    ("django", "postgresql", "rabbitmq", "celery", "docker"),
    ("fastapi", "python", "postgresql", "redis", "github-actions"),
    ("react", "typescript", "nextjs", "vite"),
    ("go", "kafka", "kubernetes", "helm", "prometheus"),
    ("google-cloud", "pulumi", "kubernetes", "envoy"),
    ("microsoft-azure", "ansible", "jenkins", "haproxy"),
    ("clickhouse", "kafka", "grafana", "python"),
    ("rust", "nats", "podman", "caddy"),
    ("vue", "typescript", "vite", "nodejs"),
)
_MIN_BURST = 3

_VERBS: tuple[str, ...] = (
    "started_using",
    "starred",
    "asked_about",
    "reviewed",
    "wrote_about",
    "stopped_using",
)
_VERB_WEIGHTS: tuple[int, ...] = (40, 20, 12, 10, 10, 8)

_TRENDING_SHARE = 0.15
# Of activity episodes; the rest are one activity each. Bursts average ~4.4 events, so 0.12
# puts about a third of all activity in bursts: visible, without drowning single events.
_BURST_SHARE = 0.12
_HOME_TOOL_SHARE = 0.7  # an actor mostly acts on tools from their own areas
# Stories per activity is 1:3. Each turn emits a story or an episode of mean length E, so
# P(story) = E / (E + 3) gives that ratio.
_MEAN_EPISODE = (1 - _BURST_SHARE) + _BURST_SHARE * (
    sum((_MIN_BURST + len(stack)) / 2 for stack in _STACKS) / len(_STACKS)
)
_STORY_SHARE = _MEAN_EPISODE / (_MEAN_EPISODE + 3)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))  # keeps first-seen order, so draws stay deterministic


def _pool(spec: str) -> tuple[str, ...]:
    """Tools of a pool spec: "*" for every tool, else group names and slugs joined by "|"."""
    if spec == "*":
        return TOOLS
    parts = spec.split("|")
    return _unique(slug for part in parts for slug in _GROUPS.get(part, {part: ""}))


_AREA_TOOLS: dict[str, tuple[str, ...]] = {area: _pool(spec) for area, spec in _AREAS.items()}
_AUTHORS: dict[str, tuple[_Person, ...]] = {
    "any": _CAST,
    **{area: tuple(p for p in _CAST if area in p.areas) for area in _AREAS},
}


def _url_slug(text: str, limit: int = 80) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug if len(slug) <= limit else slug[: slug.rfind("-", 0, limit + 1)]


def _story_url(rng: random.Random, author: _Person, title: str) -> str:
    if rng.random() < 0.7:
        company = _url_slug(author.company)
        return f"https://engineering.{company}.example/blog/{_url_slug(title)}"
    return f"https://devnotes.example/{author.handle}/{_url_slug(title)}"


def _story(rng: random.Random) -> dict[str, Any]:
    template = rng.choice(_TEMPLATES)
    author = rng.choice(_AUTHORS[template.area])
    tools: list[str] = []
    for spec in template.slots:
        tools.append(rng.choice([t for t in _pool(spec) if t not in tools]))
    if template.extra:
        spare = [t for t in _pool(template.extra) if t not in tools]
        count = min(rng.choice((0, 0, 1, 2)), 4 - len(tools), len(spare))
        tools.extend(rng.sample(spare, count))
    words = {
        # extras may fill {b}/{c} too, but only templates with that many slots use them
        **dict(zip("abc", (TOOL_NAMES[t] for t in tools), strict=False)),
        "company": author.company,
        "n": rng.choice((8, 12, 15, 24, 40, 60, 120)),
        "few": rng.randint(3, 9),
        "k": rng.choice((5, 10, 20, 50)),
        "pct": rng.randint(12, 68),
        "mins": rng.choice((17, 23, 41, 48, 95)),
        "weeks": rng.randint(3, 14),
    }
    title = template.title.format(**words)
    body = template.body.format(**words)
    if rng.random() < 0.5:
        body = f"{body} {rng.choice(_CLOSERS)}"
    return {
        "kind": "story",
        "tools": tools,
        "data": {
            "author": {
                "handle": author.handle,
                "name": author.name,
                "title": f"{author.role}, {author.company}",
            },
            "title": title,
            "body": body,
            "url": _story_url(rng, author, title),
            "tags": list(_unique((*template.tags, tools[0])))[:5],
            "trending": rng.random() < _TRENDING_SHARE,
        },
    }


def _activity(actor: _Person, verb: str, tool: str) -> dict[str, Any]:
    return {
        "kind": "activity",
        "data": {"actor": {"handle": actor.handle, "name": actor.name}, "verb": verb, "tool": tool},
    }


def _single_activity(rng: random.Random) -> dict[str, Any]:
    actor = rng.choice(_CAST)
    verb = rng.choices(_VERBS, weights=_VERB_WEIGHTS)[0]
    if rng.random() < _HOME_TOOL_SHARE:
        tool = rng.choice(_AREA_TOOLS[rng.choice(actor.areas)])
    else:
        tool = rng.choice(TOOLS)
    return _activity(actor, verb, tool)


def _burst(rng: random.Random) -> Iterator[dict[str, Any]]:
    """One actor adopting (or starring) several tools of one stack in a row."""
    actor = rng.choice(_CAST)
    stack = rng.choice(_STACKS)
    verb = "started_using" if rng.random() < 0.85 else "starred"
    for tool in rng.sample(stack, rng.randint(_MIN_BURST, len(stack))):
        yield _activity(actor, verb, tool)


def demo_requests(rng: random.Random) -> Iterator[dict[str, Any]]:
    """Endless publish requests, each {"kind": "story", "tools": [...], "data": {...}}
    or {"kind": "activity", "data": {...}} (activity: tools omitted).

    Every request is valid under the v1 contract and is a fresh dict the caller may change.
    About one story per three activities; activity sometimes comes in bursts of one actor
    taking up several related tools. The same seed gives the same stream (for one Python
    version, as ``random.Random`` promises); pacing is the caller's job.
    """
    while True:
        if rng.random() < _STORY_SHARE:
            yield _story(rng)
        elif rng.random() < _BURST_SHARE:
            yield from _burst(rng)
        else:
            yield _single_activity(rng)
