"""Deterministic synthetic Chinese extractive-QA data (HW7 and SQuAD/CMRC/DRCD formats).

This is the data of the project's embedded demo and of most tests. Every paragraph talks
about several entities of the same kind (several people, several cities, several
organisations) and is assembled from template sentences, so that

* every answer is a substring of its paragraph, and its ``answer_start`` is recorded while
  the paragraph is assembled (it points at the occurrence that actually answers the
  question, even when the same text occurs twice);
* every question names the entity whose attribute it asks about, and the paragraph holds
  other candidates of the answer's category (other years, other cities, other people,
  other amounts with the same unit ...), so that guessing by answer type alone fails and a
  model has to read;
* filler and distractor sentences make paragraphs 250-900 characters long, i.e. several
  128-token windows of a character-level Chinese BERT tokenizer;
* the text mixes full-width punctuation (，。「」《》（）), ASCII (``HXT科技有限公司``,
  ``3.5``, ``XT-200型``) and answers with book-title marks (``《星空笔记》``).

Only the standard library is used, and everything is driven by :class:`random.Random`
instances seeded from :attr:`SampleConfig.seed`, so the same configuration always gives
byte-identical files.

Public API
----------
* :class:`SampleConfig` - sizes, seed, questions per paragraph, paragraph length range.
* :func:`generate` - ``{"train"|"dev"|"test": [paragraph record, ...]}`` in memory.
* :func:`write_hw7`, :func:`write_squad`, :func:`write_all` - the files on disk.

In-memory paragraph record::

    {"id": "TRAIN_0", "title": "王伟", "context": "...",
     "qas": [{"id": "TRAIN_0_QUERY_0", "question": "...？",
              "answers": [{"text": "...", "answer_start": 12}, ...],
              "category": "year",              # answer category (see CATEGORIES)
              "fact_type": "birth_year",       # which attribute is asked (see FACT_TYPES)
              "question_template": "birth_year#1"}],
     "entities": [{"text": "...", "category": "year", "start": 12}, ...]}

``entities`` lists every entity mention of the paragraph (what a type-guessing baseline
could pick from); ``category``, ``fact_type``, ``question_template`` and ``entities`` are
extra keys of the in-memory form only and are never written to the HW7/SQuAD files.

Run ``python -m qa_scale.sample_data OUT_DIR [--seed N]`` to write every file.
"""

from __future__ import annotations

import os
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import option
from .files import atomic_open, write_json

__all__ = [
    "CATEGORIES",
    "FACT_TYPES",
    "SPLITS",
    "SampleConfig",
    "generate",
    "write_all",
    "write_hw7",
    "write_squad",
]

#: Split names produced by :func:`generate`, in order.
SPLITS: tuple[str, ...] = ("train", "dev", "test")

_FORMAT_VERSION = "qa-scale-sample"
_MAX_ATTEMPTS = 400  # attempts per paragraph before giving up on a configuration


# ======================================================================================
# Configuration
# ======================================================================================


def _as_range(value: Any, name: str) -> tuple[int, int]:
    """Validate a ``(min, max)`` pair of ints and return it as a tuple."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair of integers, got {value!r}")
    lo, hi = value
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be a (min, max) pair of integers, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name}: min must be <= max, got min={lo} > max={hi}")
    return (lo, hi)


@dataclass
class SampleConfig:
    """What :func:`generate` produces. Same configuration => same data, byte for byte."""

    seed: int = option(0, "seed of every random choice; another seed gives different data")
    train_paragraphs: int = option(300, "paragraphs of the train split")
    dev_paragraphs: int = option(60, "paragraphs of the dev split")
    test_paragraphs: int = option(60, "paragraphs of the test split")
    questions_per_paragraph: tuple[int, int] = option(
        (3, 6), "inclusive MIN MAX questions per paragraph; 1 <= MIN <= MAX <= 12")
    paragraph_chars: tuple[int, int] = option(
        (250, 900), "inclusive MIN MAX paragraph length in characters; MIN >= 120, MAX - MIN >= 20")

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("train_paragraphs", "dev_paragraphs", "test_paragraphs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        q_lo, q_hi = _as_range(self.questions_per_paragraph, "questions_per_paragraph")
        if q_lo < 1:
            raise ValueError(f"questions_per_paragraph: min must be >= 1, got {q_lo}")
        if q_hi > 12:
            raise ValueError(f"questions_per_paragraph: max must be <= 12, got {q_hi}")
        c_lo, c_hi = _as_range(self.paragraph_chars, "paragraph_chars")
        if c_lo < 120:
            raise ValueError(f"paragraph_chars: min must be >= 120 characters, got {c_lo}")
        if c_hi - c_lo < 20:
            raise ValueError(
                f"paragraph_chars: the range must span at least 20 characters, got ({c_lo}, {c_hi})"
            )
        self.questions_per_paragraph = (q_lo, q_hi)
        self.paragraph_chars = (c_lo, c_hi)

    def split_sizes(self) -> dict[str, int]:
        """Paragraph count of each split, in :data:`SPLITS` order."""
        return {
            "train": self.train_paragraphs,
            "dev": self.dev_paragraphs,
            "test": self.test_paragraphs,
        }


# ======================================================================================
# Entities
# ======================================================================================


@dataclass(frozen=True)
class _Ent:
    """One entity as written in a paragraph.

    ``text`` is what is inserted; ``primary`` the (offset within text, text) of the main
    reference answer; ``variants`` further acceptable answers as (offset, text) sub-spans.
    """

    text: str
    category: str
    kind: str
    primary: tuple[int, str]
    variants: tuple[tuple[int, str], ...] = ()


_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘蒋蔡余杜叶"
    "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯史陶黎贺顾毛郝龚邵钱严戴孔汤"
)
_COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "慕容", "司徒")
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚华建志文斌鹏辉玲琳宇浩凯晨欣怡婷雪梅兰松柏波涵嘉睿哲思源博晓航毅峰岚薇蕾彤颖昊瑶琪轩"

_REAL_CITIES = (
    "杭州 苏州 南京 成都 武汉 西安 长沙 青岛 厦门 大连 昆明 贵阳 南宁 福州 合肥 济南 郑州 太原 "
    "兰州 银川 洛阳 桂林 扬州 无锡 宁波 温州 绍兴 泉州 珠海 佛山 徐州 常州 烟台 柳州 赣州 襄阳"
).split()
_CITY_HEAD = "青临安永长新泰清平华江云丰宁东西南北金玉白龙凤石松桐望春秋明"
_CITY_TAIL = "阳州安城川山江宁原德海泉林门平溪口峰湖丘"
_PROVINCES = (
    "河北 山西 辽宁 吉林 黑龙江 江苏 浙江 安徽 福建 江西 山东 河南 湖北 湖南 广东 海南 四川 贵州 "
    "云南 陕西 甘肃 青海"
).split()

_ORG_CORES = (
    "华信 远航 星辰 鼎盛 海纳 蓝天 恒通 中科 天工 明德 启航 新锐 瑞丰 嘉禾 博远 云帆 锦程 卓越 "
    "长风 凌云 东方 北辰 晨光 万象 泰和 弘毅 致远 精诚"
).split()
_INDUSTRIES = "科技 电子 能源 生物 传媒 物流 软件 医药 汽车 通信 机器人 环保".split()
_FIELDS = "材料 能源 信息 生物 海洋 光电 化学 数学 人工智能 环境 地质 气象".split()
_ASSOC_FIELDS = "摄影 书法 围棋 作家 建筑学 天文 计算机 青年企业家 收藏 民俗".split()
_ASCII_WORDS = ("AI", "IT", "DNA", "5G", "GPS", "Web", "App")

_BOOK_HEAD = "星空 长河 远方 旧梦 山海 春秋 归途 边城 浮生 风雪 林间 雾中 城南 秋水 晚霞 故园 潮汐 北方 白夜 灯火".split()
_BOOK_TAIL = "笔记 之歌 往事 纪事 物语 随笔 札记 手记 十年 旅行 简史 漫谈".split()
_AWARD_HEAD = "青年 金笔 星光 卓越 杰出 华夏 长江 曙光 春蕾 远见 启明 银杏".split()
_AWARD_TAIL = "科学家 文学 创新 教育 工程师 设计 科技进步 新闻 青年学者 出版".split()
_POSITIONS = (
    "教授 副教授 研究员 总经理 首席执行官 技术总监 副院长 主编 总工程师 董事长 副总裁 "
    "首席科学家 项目经理 财务总监 设计总监 秘书长"
).split()
_MAJORS = (
    "物理学 化学 计算机科学 经济学 历史学 数学 临床医学 建筑学 法学 新闻学 机械工程 生物学 "
    "哲学 天文学 材料科学 社会学"
).split()
_MOUNTAIN_HEAD = "云雾 青龙 白鹤 紫金 凤凰 天柱 玉屏 翠屏 卧龙 灵岩 苍岭 雁回 碧霞 栖霞 鹰嘴".split()
_PRODUCT_THINGS = "无人机 机器人 扫描仪 发动机 服务器 显微镜".split()
_PRODUCT_SYSTEMS = "操作系统 智能平台 云服务 芯片 数据库".split()
_PRODUCT_SERIES = "手机 电动车 耳机 笔记本电脑 手表".split()


def _plain(text: str, category: str, kind: str, variants: Sequence[tuple[int, str]] = ()) -> _Ent:
    return _Ent(text, category, kind, (0, text), tuple(variants))


def _tenths(rng: random.Random, lo: int, hi: int) -> str:
    """A decimal with one digit after the point, from lo/10 to hi/10 (no float formatting)."""
    n = rng.randint(lo, hi)
    return f"{n // 10}.{n % 10}"


def _gen_person(rng: random.Random) -> str:
    surname = rng.choice(_COMPOUND_SURNAMES) if rng.random() < 0.06 else rng.choice(_SURNAMES)
    given = "".join(rng.choice(_GIVEN) for _ in range(1 if rng.random() < 0.35 else 2))
    return surname + given


def _gen_city(rng: random.Random) -> _Ent:
    if rng.random() < 0.35:
        core = rng.choice(_REAL_CITIES)
    else:
        core = rng.choice(_CITY_HEAD) + rng.choice(_CITY_TAIL)
    return _plain(core + "市", "city", "city", [(0, core)])


def _gen_province(rng: random.Random) -> _Ent:
    if rng.random() < 0.8:
        core = rng.choice(_PROVINCES)
    else:
        core = rng.choice(_CITY_TAIL) + rng.choice(_CITY_HEAD)
    return _plain(core + "省", "province", "province", [(0, core)])


def _gen_year(rng: random.Random, lo: int, hi: int, kind: str) -> _Ent:
    y = str(rng.randint(lo, hi))
    return _plain(y + "年", "year", kind, [(0, y)])


def _gen_year_old(rng: random.Random) -> _Ent:
    if rng.random() < 0.4:
        y = str(rng.randint(200, 999))
        return _plain(f"公元{y}年", "year", "year_old", [(2, y + "年")])
    return _gen_year(rng, 1100, 1900, "year_old")


def _gen_date(rng: random.Random, lo: int = 1950, hi: int = 2023) -> _Ent:
    y, m, d = rng.randint(lo, hi), rng.randint(1, 12), rng.randint(1, 28)
    return _plain(f"{y}年{m}月{d}日", "date", "date")


def _ascii_abbr(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(2, 4)))


def _gen_company(rng: random.Random) -> _Ent:
    ind = rng.choice(_INDUSTRIES)
    form = rng.randrange(4)
    if form == 0:
        text = f"{rng.choice(_ORG_CORES)}{ind}有限公司"
    elif form == 1:
        text = f"{rng.choice(_ORG_CORES)}{ind}集团"
    elif form == 2:
        text = f"{_ascii_abbr(rng)}{ind}公司"
    else:
        text = f"{rng.choice(_ORG_CORES)}{ind}股份有限公司"
    return _plain(text, "org", "company")


def _gen_university(rng: random.Random) -> _Ent:
    kind = rng.choice(("大学", "理工大学", "师范大学", "科技大学", "医科大学"))
    core = rng.choice(_ORG_CORES) if rng.random() < 0.6 else rng.choice(_CITY_HEAD) + rng.choice(_CITY_TAIL)
    return _plain(core + kind, "org", "university")


def _gen_institute(rng: random.Random) -> _Ent:
    return _plain(f"{rng.choice(_ORG_CORES)}{rng.choice(_FIELDS)}研究所", "org", "institute")


def _gen_association(rng: random.Random) -> _Ent:
    return _plain(f"{rng.choice(_ORG_CORES)}{rng.choice(_ASSOC_FIELDS)}协会", "org", "association")


def _gen_book(rng: random.Random) -> _Ent:
    if rng.random() < 0.12:
        inner = rng.choice(_ASCII_WORDS) + rng.choice(_BOOK_TAIL)
    else:
        inner = rng.choice(_BOOK_HEAD) + rng.choice(_BOOK_TAIL)
    return _plain(f"《{inner}》", "book", "book", [(1, inner)])


def _gen_award(rng: random.Random) -> _Ent:
    inner = rng.choice(_AWARD_HEAD) + rng.choice(_AWARD_TAIL) + "奖"
    text = f"「{inner}」"
    return _Ent(text, "award", "award", (1, inner), ((0, text),))


def _gen_product(rng: random.Random) -> _Ent:
    form = rng.randrange(3)
    if form == 0:
        text = f"{_ascii_abbr(rng)}-{rng.randint(1, 9) * 100}型{rng.choice(_PRODUCT_THINGS)}"
    elif form == 1:
        text = f"{rng.choice(_ORG_CORES)}{_tenths(rng, 10, 99)}{rng.choice(_PRODUCT_SYSTEMS)}"
    else:
        core = rng.choice(_BOOK_HEAD)
        text = f"「{core}」系列{rng.choice(_PRODUCT_SERIES)}"
    return _plain(text, "product", "product")


def _gen_landmark(rng: random.Random) -> _Ent:
    core = rng.choice(_MOUNTAIN_HEAD)
    return _plain(core + rng.choice(("山", "峰", "岭")), "landmark", "landmark")


def _unit(kind: str, category: str, number: str, unit: str, drop: int | None = None) -> _Ent:
    """A number with a unit; ``drop`` characters of the unit may be left out in a variant."""
    text = number + unit
    keep = len(text) - (len(unit) if drop is None else drop)
    return _plain(text, category, kind, [(0, text[:keep])])


def _gen_population(rng: random.Random) -> _Ent:
    num = _tenths(rng, 100, 999) if rng.random() < 0.3 else str(rng.randint(20, 2400))
    return _unit("population", "population", num, "万人", drop=1)


def _gen_gdp(rng: random.Random) -> _Ent:
    return _unit("gdp", "money", _tenths(rng, 5000, 300000), "亿元", drop=1)


def _gen_revenue(rng: random.Random) -> _Ent:
    if rng.random() < 0.7:
        return _unit("revenue", "money", _tenths(rng, 10, 9999), "亿元", drop=1)
    return _unit("revenue", "money", str(rng.randint(120, 9800)), "万元", drop=1)


def _gen_percent(rng: random.Random) -> _Ent:
    return _unit("percent", "percent", _tenths(rng, 10, 650), "%")


_GENERATORS: dict[str, Callable[[random.Random], _Ent]] = {
    "person": lambda r: _plain(_gen_person(r), "person", "person"),
    "city": _gen_city,
    "province": _gen_province,
    "year_birth": lambda r: _gen_year(r, 1900, 1985, "year_birth"),
    "year_recent": lambda r: _gen_year(r, 1980, 2023, "year_recent"),
    "year_old": _gen_year_old,
    "date": _gen_date,
    "company": _gen_company,
    "university": _gen_university,
    "institute": _gen_institute,
    "association": _gen_association,
    "employer": lambda r: r.choice((_gen_company, _gen_company, _gen_institute, _gen_university))(r),
    "book": _gen_book,
    "award": _gen_award,
    "position": lambda r: _plain(r.choice(_POSITIONS), "position", "position"),
    "major": lambda r: _plain(r.choice(_MAJORS), "major", "major"),
    "abbr": lambda r: _plain(_ascii_abbr(r), "abbreviation", "abbr"),
    "landmark": _gen_landmark,
    "product": _gen_product,
    "population": _gen_population,
    "area": lambda r: _unit("area", "area", str(r.randint(300, 21000)), "平方公里"),
    "distance": lambda r: _unit("distance", "distance", str(r.randint(15, 950)), "公里"),
    "height": lambda r: _unit("height", "height", str(r.randint(300, 3600)), "米"),
    "copies": lambda r: _unit("copies", "copies", str(r.randint(2, 480)), "万册", drop=1),
    "gdp": _gen_gdp,
    "revenue": _gen_revenue,
    "percent": _gen_percent,
    "count_zuo": lambda r: _unit("count_zuo", "count", str(r.randint(12, 460)), "座"),
    "count_ming": lambda r: _unit("count_ming", "count", str(r.randint(60, 26000)), "名"),
    "count_jia": lambda r: _unit("count_jia", "count", str(r.randint(3, 180)), "家"),
}

_KIND_CATEGORY: dict[str, str] = {k: g(random.Random(0)).category for k, g in _GENERATORS.items()}

#: Slot kinds that may point at another subject of the paragraph instead of a new entity.
_REUSE_FROM = {"person": "person", "city": "city", "employer": "org"}


class _Pool:
    """The entities of one paragraph: no two distinct entities contain one another."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.texts: list[str] = []

    def _conflicts(self, text: str) -> bool:
        return any(text in t or t in text for t in self.texts)

    def new(self, kind: str, years: tuple[int, int] | None = None) -> _Ent:
        """A fresh entity of ``kind``; ``years`` bounds the year of year/date kinds."""
        gen = _GENERATORS[kind]
        if years is not None and kind in ("year_recent", "year_birth"):
            gen = lambda r: _gen_year(r, years[0], years[1], kind)  # noqa: E731
        elif years is not None and kind == "date":
            gen = lambda r: _gen_date(r, years[0], years[1])  # noqa: E731
        for _ in range(200):
            ent = gen(self.rng)
            if not self._conflicts(ent.text):
                self.texts.append(ent.text)
                return ent
        raise RuntimeError(f"could not draw a fresh entity of kind {kind!r}")  # pragma: no cover


# ======================================================================================
# Templates
# ======================================================================================


@dataclass(frozen=True)
class _Group:
    """A family of sentences about one subject sharing the same slots.

    ``subject`` is the subject slot ("P" person, "C" city, "O" organisation); ``slots``
    maps every other slot to the entity kind it holds; ``facts`` are the slots that can be
    asked about; ``only`` restricts organisation groups to some organisation kinds.
    """

    name: str
    subject: str
    slots: tuple[tuple[str, str], ...]
    phrasings: tuple[str, ...]
    facts: tuple[str, ...]
    only: tuple[str, ...] = ()


def _g(name: str, subject: str, slots: str, phrasings: Iterable[str], facts: str, only: str = "") -> _Group:
    pairs = tuple(tuple(p.split(":")) for p in slots.split())
    return _Group(name, subject, pairs, tuple(phrasings), tuple(facts.split()), tuple(only.split()))  # type: ignore[arg-type]


_GROUPS: tuple[_Group, ...] = (
    # ---------------------------------------------------------------- people
    _g("birth", "P", "birth_year:year_birth birth_city:city", (
        "{P}于{birth_year}出生在{birth_city}。",
        "{birth_year}，{P}出生在{birth_city}的一个普通家庭。",
        "{P}{birth_year}生于{birth_city}，童年在那里度过。",
    ), "birth_year birth_city"),
    _g("education", "P", "school:university major:major", (
        "{P}毕业于{school}{major}专业。",
        "{P}曾就读于{school}，主修{major}。",
        "中学毕业后，{P}考入{school}，攻读{major}专业。",
    ), "school major"),
    _g("job", "P", "join_year:year_recent employer:employer position:position", (
        "{join_year}，{P}加入{employer}，担任{position}。",
        "{P}自{join_year}起在{employer}工作，现任{position}。",
        "{P}于{join_year}进入{employer}，此后一直担任{position}一职。",
    ), "join_year employer position"),
    _g("book", "P", "book_year:year_recent book:book book_sales:copies", (
        "{book_year}，{P}出版了代表作{book}，销量超过{book_sales}。",
        "{P}的代表作{book}于{book_year}出版，累计售出{book_sales}。",
    ), "book_year book book_sales"),
    _g("award", "P", "award_date:date award:award", (
        "{award_date}，{P}凭借出色的工作获得了{award}。",
        "{P}曾于{award_date}荣获{award}，这是对其多年努力的肯定。",
    ), "award_date award"),
    _g("mentor", "P", "mentor:person", (
        "{P}的导师是著名学者{mentor}。",
        "求学期间，{P}师从{mentor}，深受其影响。",
    ), "mentor"),
    _g("origin", "P", "origin_province:province", (
        "{P}祖籍{origin_province}，家中世代务农。",
        "{P}的祖籍是{origin_province}。",
    ), "origin_province"),
    _g("move", "P", "move_year:year_recent move_city:city", (
        "{move_year}，{P}举家迁往{move_city}定居。",
        "{P}在{move_year}迁往{move_city}，从此在那里生活。",
    ), "move_year move_city"),
    # ---------------------------------------------------------------- cities
    _g("location", "C", "province:province", (
        "{C}位于{province}东部，是该省的重要城市。",
        "{C}隶属于{province}，地处平原地带。",
        "{C}地处{province}西南部，山水环绕。",
    ), "province"),
    _g("population", "C", "pop_year:year_recent population:population", (
        "截至{pop_year}，{C}的常住人口约为{population}。",
        "{C}的常住人口约{population}（{pop_year}统计）。",
    ), "population"),
    _g("area", "C", "area:area", (
        "{C}的总面积为{area}。",
        "{C}辖区总面积约{area}，下辖多个区县。",
    ), "area"),
    _g("founding", "C", "city_founded:year_old", (
        "{C}始建于{city_founded}，历史悠久。",
        "早在{city_founded}，{C}就已经建城。",
    ), "city_founded"),
    _g("bridges", "C", "bridges:count_zuo", (
        "{C}境内河网密布，共有大小桥梁{bridges}。",
        "{C}共建有{bridges}桥梁，素有「桥城」之称。",
    ), "bridges"),
    _g("distance", "C", "dist_city:city distance:distance", (
        "{C}距离{dist_city}约{distance}，驾车往来十分方便。",
        "从{C}到{dist_city}的公路里程约为{distance}。",
    ), "dist_city distance"),
    _g("gdp", "C", "gdp_year:year_recent gdp:gdp", (
        "{gdp_year}，{C}的地区生产总值达到{gdp}。",
        "{C}在{gdp_year}实现地区生产总值{gdp}，增速位居全省前列。",
    ), "gdp_year gdp"),
    _g("mayor", "C", "mayor:person", (
        "{C}现任市长为{mayor}。",
        "现任{C}市长{mayor}多次表示要大力发展旅游业。",
    ), "mayor"),
    _g("mountain", "C", "mountain:landmark height:height", (
        "{C}以{mountain}闻名，其主峰海拔{height}。",
        "{C}境内的{mountain}海拔{height}，是著名的风景区。",
    ), "mountain height"),
    # ---------------------------------------------------------------- organisations
    _g("org_founding", "O", "org_founded:date founder:person", (
        "{O}由{founder}于{org_founded}创立。",
        "{org_founded}，{founder}创办了{O}。",
        "{O}成立于{org_founded}，创始人是{founder}。",
    ), "org_founded founder"),
    _g("hq", "O", "hq_city:city", (
        "{O}的总部设在{hq_city}。",
        "{O}总部位于{hq_city}，并在多地设有办事处。",
    ), "hq_city"),
    _g("staff", "O", "staff:count_ming", (
        "{O}目前拥有员工{staff}。",
        "{O}现有{staff}员工，其中一半以上从事研发工作。",
    ), "staff", only="company institute association"),
    _g("students", "O", "students:count_ming", (
        "{O}目前有在校学生{students}。",
        "{O}现有{students}在校学生，设有多个学院。",
    ), "students", only="university"),
    _g("revenue", "O", "rev_year:year_recent revenue:revenue", (
        "{rev_year}，{O}的营业收入为{revenue}。",
        "{O}在{rev_year}实现营业收入{revenue}，同比增长明显。",
    ), "rev_year revenue", only="company"),
    _g("abbr", "O", "abbr:abbr", (
        "{O}的英文简称为{abbr}。",
        "{O}（英文简称{abbr}）在业内享有盛誉。",
    ), "abbr"),
    _g("share", "O", "share:percent", (
        "{O}的市场份额约为{share}。",
        "目前，{O}占据了约{share}的市场份额。",
    ), "share", only="company"),
    _g("product", "O", "product:product", (
        "{O}推出的主要产品{product}广受好评。",
        "{O}的主要产品是{product}。",
    ), "product", only="company institute"),
    _g("leader", "O", "leader:person", (
        "{O}的现任负责人是{leader}。",
        "目前，{leader}担任{O}的负责人。",
    ), "leader"),
    _g("branches", "O", "branches:count_jia", (
        "{O}在全国设有{branches}分支机构。",
        "经过多年发展，{O}已在各地开设{branches}分支机构。",
    ), "branches", only="company association"),
)

#: Question templates per fact type. ``{P}``/``{C}``/``{O}`` is the subject; other fields
#: are slots of the same sentence group (never the answer slot itself).
_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_year": ("{P}是哪一年出生的？", "{P}出生于哪一年？", "{P}在哪一年出生？"),
    "birth_city": ("{P}出生在哪个城市？", "{P}的出生地是哪里？", "{P}是在哪座城市出生的？"),
    "school": ("{P}毕业于哪所大学？", "{P}曾在哪所学校就读？"),
    "major": ("{P}在大学主修什么专业？", "{P}学的是什么专业？"),
    "join_year": ("{P}是哪一年加入{employer}的？", "{P}从哪一年开始在{employer}工作？"),
    "employer": ("{P}在哪家机构工作？", "{P}加入了哪个单位？"),
    "position": ("{P}在{employer}担任什么职务？", "{P}的职务是什么？"),
    "book": ("{P}的代表作是什么？", "{P}在{book_year}出版了哪部作品？"),
    "book_year": ("{P}的代表作是哪一年出版的？", "{book}是在哪一年出版的？"),
    "book_sales": ("{book}的销量是多少？", "{P}的代表作一共售出了多少册？"),
    "award_date": ("{P}是在什么时候获得{award}的？", "{P}获得{award}的日期是哪一天？"),
    "award": ("{P}获得过什么奖项？", "{P}荣获了哪个奖项？"),
    "mentor": ("{P}的导师是谁？", "{P}师从哪位学者？"),
    "origin_province": ("{P}的祖籍是哪里？", "{P}祖籍哪个省份？"),
    "move_year": ("{P}是哪一年迁往{move_city}的？", "{P}在哪一年搬到了{move_city}？"),
    "move_city": ("{P}后来迁往了哪座城市？", "{P}举家迁到了哪个城市？"),
    "province": ("{C}位于哪个省份？", "{C}隶属于哪个省？"),
    "population": ("{C}的常住人口大约有多少？", "{C}约有多少常住人口？"),
    "area": ("{C}的总面积是多少？", "{C}的面积有多大？"),
    "city_founded": ("{C}始建于哪一年？", "{C}是在哪一年建城的？"),
    "bridges": ("{C}共有多少座桥梁？", "{C}境内有几座桥？"),
    "dist_city": ("{C}与哪座城市相距约{distance}？", "距离{C}约{distance}的是哪座城市？"),
    "distance": ("{C}距离{dist_city}大约多少公里？", "从{C}到{dist_city}有多远？"),
    "gdp_year": ("{C}的地区生产总值在哪一年达到{gdp}？", "{C}是哪一年实现地区生产总值{gdp}的？"),
    "gdp": ("{C}的地区生产总值达到了多少？", "{gdp_year}{C}的地区生产总值是多少？"),
    "mayor": ("{C}的现任市长是谁？", "谁是{C}的市长？"),
    "mountain": ("{C}境内有哪座名山？", "{C}以哪座山闻名？"),
    "height": ("{mountain}的海拔是多少？", "{mountain}有多高？"),
    "org_founded": ("{O}是什么时候成立的？", "{O}的成立日期是哪一天？"),
    "founder": ("{O}的创始人是谁？", "谁创办了{O}？"),
    "hq_city": ("{O}的总部在哪个城市？", "{O}的总部设在哪里？"),
    "staff": ("{O}有多少名员工？", "{O}目前的员工人数是多少？"),
    "students": ("{O}有多少名在校学生？", "{O}的在校学生人数是多少？"),
    "rev_year": ("{O}在哪一年的营业收入为{revenue}？", "{O}是哪一年实现营业收入{revenue}的？"),
    "revenue": ("{O}在{rev_year}的营业收入是多少？", "{O}的营业收入达到了多少？"),
    "abbr": ("{O}的英文简称是什么？", "{O}的简称是什么？"),
    "share": ("{O}的市场份额约为多少？", "{O}占据了多大的市场份额？"),
    "product": ("{O}的主要产品是什么？", "{O}推出了什么产品？"),
    "leader": ("{O}的现任负责人是谁？", "谁是{O}的负责人？"),
    "branches": ("{O}在全国设有多少家分支机构？", "{O}有多少家分支机构？"),
}

#: Every fact type (attribute that can be asked about).
FACT_TYPES: tuple[str, ...] = tuple(_QUESTIONS)

#: Answer categories (what a type-guessing baseline would match on).
CATEGORIES: tuple[str, ...] = (
    "person", "city", "province", "year", "date", "org", "book", "award", "position", "major",
    "abbreviation", "landmark", "product", "population", "area", "distance", "money", "height",
    "copies", "percent", "count",
)

# Sentences that add no entity: history, description, atmosphere.
_FILLERS: tuple[str, ...] = (
    "这里四季分明，气候温和湿润。",
    "当地的传统手工艺至今仍有传承。",
    "近年来，相关部门持续加大投入，基础设施不断完善。",
    "历史上，这一地区曾多次经历战乱，但很快又恢复了繁荣。",
    "每逢节假日，街头巷尾都十分热闹。",
    "有学者指出，这一现象与当地独特的地理环境密切相关。",
    "此后多年，各项工作稳步推进。",
    "业内人士认为，行业竞争在近几年明显加剧。",
    "这一说法后来得到了多方证实。",
    "据当地史料记载，这一带自古便是商旅往来的要道。",
    "不少年轻人选择返乡创业，为地方发展注入了新的活力。",
    "与此同时，周边的交通网络也在逐步完善。",
    "对此，社会各界给予了广泛关注。",
    "相关研究成果曾在多个学术会议上进行展示。",
    "随着时代的发展，人们的生活方式也发生了巨大变化。",
    "当地居民至今仍保留着春节舞龙的习俗。",
    "老街经过修缮后，吸引了大量游客前来参观。",
    "一些评论家认为，这些作品真实地记录了那个年代的社会风貌。",
    "这段经历对其后来的发展产生了深远影响。",
    "许多人都对此留下了深刻印象。",
    "在此期间，团队克服了资金短缺等诸多困难。",
    "该地区的茶叶、丝绸和瓷器远近闻名。",
    "上世纪中叶，这里还只是一片荒凉的滩涂。",
    "如今，这里已经发展成为区域性的经济中心。",
    "此事在当时引起了不小的轰动。",
    "专家表示，未来几年仍将保持较快的增长势头。",
    "据统计，前来参观的游客中有相当一部分来自外地。",
    "这一传统一直延续至今。",
    "当地还出台了多项扶持政策，鼓励企业加大研发投入。",
    "每年春天，漫山遍野的杜鹃花竞相开放，景色十分壮观。",
    "夜幕降临后，河岸两侧灯火通明。",
    "这里的美食以口味清淡著称，深受食客喜爱。",
    "在随后的几十年里，城市面貌发生了翻天覆地的变化。",
    "正如一位老居民所说：「这里的变化太大了。」",
    "（以上数据均来自公开资料。）",
    "人们常用「山清水秀」来形容这里的自然风光。",
    "围绕这一话题，各方展开了热烈讨论。",
    "另据报道，部分项目已进入收尾阶段。",
    "这些变化，都是几代人共同努力的结果。",
    "部分展馆支持VR导览，参观体验颇受好评。",
    "当地已基本实现5G信号全覆盖。",
    "相关产品还通过了ISO 9001质量管理体系认证。",
    "有人将这段时期称为「黄金十年」。",
    "此后，局势逐渐趋于平稳。",
)

# Sentences that add a distractor entity: (slot kind, template with {X}).
_DISTRACTORS: tuple[tuple[str, str], ...] = (
    ("year_recent", "{X}，当地遭遇了一场罕见的暴雨。"),
    ("year_recent", "{X}前后，周边地区的交通条件得到明显改善。"),
    ("year_old", "据记载，{X}这里曾举办过一次盛大的庙会。"),
    ("year_birth", "当地第一所中学创办于{X}。"),
    ("date", "{X}，一场大型文化节在市中心开幕。"),
    ("date", "相关纪念活动于{X}隆重举行。"),
    ("person", "记者{X}在报道中对此进行了详细介绍。"),
    ("person", "评论家{X}认为，这一现象值得深入研究。"),
    ("person", "据亲历者{X}回忆，当时的条件十分艰苦。"),
    ("city", "不少游客会从{X}乘高铁前来参观。"),
    ("city", "来自{X}的代表团曾专程到访交流。"),
    ("province", "来自{X}的客商也纷纷前来洽谈合作。"),
    ("province", "这种做法后来被推广到了{X}等地。"),
    ("company", "{X}也曾参与过相关项目的合作。"),
    ("institute", "据{X}发布的报告显示，该领域发展迅速。"),
    ("university", "{X}的师生曾多次来此开展调研。"),
    ("association", "{X}每年都会在这里举办交流活动。"),
    ("book", "同一时期出版的{X}也引起了广泛讨论。"),
    ("book", "许多读者常将其与{X}相提并论。"),
    ("award", "同年设立的{X}则主要面向青年学者。"),
    ("award", "{X}的评选工作每两年举行一次。"),
    ("position", "会上，一位{X}介绍了下一阶段的工作计划。"),
    ("position", "据一位{X}透露，相关项目进展顺利。"),
    ("major", "近年来，报考{X}专业的学生人数持续增加。"),
    ("major", "不少{X}专业的毕业生选择留在当地工作。"),
    ("abbr", "业内另一家简称为{X}的机构也在积极布局这一领域。"),
    ("landmark", "另一处景点{X}也吸引了大量游客。"),
    ("landmark", "从城区出发，驱车前往{X}只需一小时左右。"),
    ("product", "竞争对手推出的{X}也颇受关注。"),
    ("population", "周边县区的人口合计约{X}。"),
    ("population", "每年到访的游客约为{X}。"),
    ("area", "附近的自然保护区面积约{X}。"),
    ("distance", "全长{X}的环城公路已于近年建成通车。"),
    ("distance", "一条长约{X}的铁路将这里与沿海地区相连。"),
    ("gdp", "相关项目的总投资额达到{X}。"),
    ("revenue", "当年用于基础设施建设的投资约为{X}。"),
    ("height", "附近山区的平均海拔约为{X}。"),
    ("copies", "同类作品的平均销量仅为{X}。"),
    ("copies", "该出版社去年共发行图书{X}。"),
    ("percent", "同期全国平均水平约为{X}。"),
    ("percent", "相比之下，行业平均增长率仅为{X}。"),
    ("count_zuo", "城区周边还保存着{X}古塔。"),
    ("count_ming", "活动共吸引了{X}志愿者参与。"),
    ("count_jia", "附近新开了{X}特色餐馆。"),
)

_ORG_KINDS = ("company", "company", "university", "institute", "association")
_SUBJECT_KIND = {"P": "person", "C": "city", "O": "org"}


def _template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def _check_templates() -> None:
    """Raise AssertionError when a template refers to a slot its group does not have."""
    seen: set[str] = set()
    for group in _GROUPS:
        slots = {group.subject} | {s for s, _ in group.slots}
        for kind in (k for _, k in group.slots):
            assert kind in _GENERATORS, (group.name, kind)
        for phr in group.phrasings:
            fields = _template_fields(phr)
            assert sorted(fields) == sorted(slots), (group.name, phr)
        for fact in group.facts:
            assert fact in _QUESTIONS and fact not in seen, fact
            seen.add(fact)
            for q in _QUESTIONS[fact]:
                fields = set(_template_fields(q))
                assert fields, q  # names the subject or another entity of the sentence
                assert fields <= slots - {fact}, q
    assert seen == set(_QUESTIONS), set(_QUESTIONS) ^ seen
    for kind, tmpl in _DISTRACTORS:
        assert kind in _GENERATORS and _template_fields(tmpl) == ["X"], tmpl


# ======================================================================================
# Paragraph assembly
# ======================================================================================


@dataclass
class _Sentence:
    text: str
    spans: list[tuple[str, int, _Ent]]  # (slot, offset within the sentence, entity)
    group: _Group | None = None
    values: dict[str, _Ent] | None = None


def _render(template: str, values: Mapping[str, _Ent]) -> tuple[str, list[tuple[str, int, _Ent]]]:
    parts: list[str] = []
    spans: list[tuple[str, int, _Ent]] = []
    pos = 0
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        pos += len(literal)
        if field is not None:
            ent = values[field]
            spans.append((field, pos, ent))
            parts.append(ent.text)
            pos += len(ent.text)
    return "".join(parts), spans


class _ParagraphBuilder:
    def __init__(self, rng: random.Random, config: SampleConfig, with_variants: bool) -> None:
        self.rng = rng
        self.config = config
        self.with_variants = with_variants

    # ---------------------------------------------------------------- subjects
    def _new_subject(self, pool: _Pool, kind: str) -> _Ent:
        if kind == "org":
            return pool.new(self.rng.choice(_ORG_KINDS))
        return pool.new(kind)

    def _slot_value(
        self, pool: _Pool, kind: str, subject: _Ent, subjects: list[_Ent], years: tuple[int, int] | None
    ) -> _Ent:
        reuse = _REUSE_FROM.get(kind)
        if reuse is not None and self.rng.random() < 0.3:
            others = [s for s in subjects if s.category == reuse and s is not subject]
            if others:
                return self.rng.choice(others)
        return pool.new(kind, years)

    def _subject_block(self, pool: _Pool, subject_slot: str, subject: _Ent, subjects: list[_Ent]) -> list[_Sentence]:
        groups = [
            g for g in _GROUPS
            if g.subject == subject_slot and (not g.only or subject.kind in g.only)
        ]
        self.rng.shuffle(groups)
        n = self.rng.randint(2, min(5, len(groups)))
        # A person's life events happen between the age of 18 and 70 (and before 2024).
        birth: _Ent | None = None
        years: tuple[int, int] | None = None
        if subject_slot == "P":
            birth = pool.new("year_birth")
            b = int(birth.primary[1][:4])
            years = (b + 18, min(b + 70, 2023))
        block = []
        for group in groups[:n]:
            values = {subject_slot: subject}
            for slot, kind in group.slots:
                if slot == "birth_year" and birth is not None:
                    values[slot] = birth
                else:
                    values[slot] = self._slot_value(pool, kind, subject, subjects, years)
            text, spans = _render(self.rng.choice(group.phrasings), values)
            block.append(_Sentence(text, spans, group, values))
        return block

    # ---------------------------------------------------------------- one attempt
    def _attempt(self, pid: str) -> dict[str, Any] | None:
        rng = self.rng
        lo, hi = self.config.paragraph_chars
        q_lo, q_hi = self.config.questions_per_paragraph
        target = rng.randint(lo, hi)
        n_questions = rng.randint(q_lo, q_hi)
        pool = _Pool(rng)

        # 1. subjects: at least two of a main kind, then more until the facts fill ~60 %.
        main = rng.choice(("P", "P", "C", "O"))
        plan = [main, main]
        subjects: list[_Ent] = []
        sentences: list[_Sentence] = []
        fact_budget = max(int(target * 0.6), 1)
        i = 0
        while True:
            slot = plan[i] if i < len(plan) else rng.choice((main, "P", "C", "O"))
            subject = self._new_subject(pool, _SUBJECT_KIND[slot])
            subjects.append(subject)
            sentences.extend(self._subject_block(pool, slot, subject, subjects))
            i += 1
            length = sum(len(s.text) for s in sentences)
            n_facts = sum(len(s.group.facts) for s in sentences if s.group)
            if i >= len(plan) and length >= fact_budget and n_facts >= n_questions:
                break
            if length > hi:
                return None

        # 2. questions: prefer distinct fact types; one question per (subject, fact).
        facts = [(s, f) for s in sentences if s.group for f in s.group.facts]
        rng.shuffle(facts)
        chosen: list[tuple[_Sentence, str]] = []
        used_types: set[str] = set()
        taken: set[tuple[int, str]] = set()
        for s, f in facts:
            if len(chosen) < n_questions and f not in used_types:
                chosen.append((s, f))
                used_types.add(f)
                taken.add((id(s), f))
        for s, f in facts:
            if len(chosen) < n_questions and (id(s), f) not in taken:
                chosen.append((s, f))
                taken.add((id(s), f))
        if len(chosen) < n_questions:
            return None

        # 3. distractors for answer categories that have a single distinct entity so far,
        #    then fillers (half of them distractors too) until the target length.
        extra: list[_Sentence] = []

        def distinct(category: str) -> set[str]:
            return {e.primary[1] for x in sentences + extra for _, _, e in x.spans if e.category == category}

        length = sum(len(s.text) for s in sentences)
        for s, f in chosen:
            ent = s.values[f]  # type: ignore[index]
            if len(distinct(ent.category)) >= 2:
                continue
            options = [t for t in _DISTRACTORS if t[0] == ent.kind] or [
                t for t in _DISTRACTORS if _KIND_CATEGORY[t[0]] == ent.category
            ]
            kind, tmpl = rng.choice(options)
            x = _Sentence(*_render(tmpl, {"X": pool.new(kind)}))
            if length + len(x.text) <= hi:
                extra.append(x)
                length += len(x.text)
        while length < target:
            if rng.random() < 0.5:
                kind, tmpl = rng.choice(_DISTRACTORS)
                x = _Sentence(*_render(tmpl, {"X": pool.new(kind)}))
            else:
                x = _Sentence(rng.choice(_FILLERS), [])
            if length + len(x.text) > hi:
                fitting = [f for f in _FILLERS if length + len(f) <= hi]
                if not fitting:
                    break
                x = _Sentence(rng.choice(fitting), [])
            extra.append(x)
            length += len(x.text)
        for x in extra:
            sentences.insert(rng.randint(1, len(sentences)), x)
        if not lo <= length <= hi:
            return None

        # 4. assemble, recording every offset.
        starts: dict[int, int] = {}
        pos = 0
        for s in sentences:
            starts[id(s)] = pos
            pos += len(s.text)
        context = "".join(s.text for s in sentences)
        entities = []
        for s in sentences:
            for _, off, ent in s.spans:
                entities.append({
                    "text": ent.primary[1],
                    "category": ent.category,
                    "start": starts[id(s)] + off + ent.primary[0],
                })

        qas = []
        questions_seen: set[str] = set()
        for j, (s, f) in enumerate(chosen):
            ent_start = starts[id(s)] + next(off for slot, off, _ in s.spans if slot == f)
            ent = s.values[f]  # type: ignore[index]
            t_index = rng.randrange(len(_QUESTIONS[f]))
            question = _QUESTIONS[f][t_index].format(**{k: v.text for k, v in s.values.items()})  # type: ignore[union-attr]
            if question in questions_seen:
                return None
            questions_seen.add(question)
            answers = [{"text": ent.primary[1], "answer_start": ent_start + ent.primary[0]}]
            if self.with_variants and ent.variants:
                k = rng.randint(0, min(2, len(ent.variants)))
                for off, text in rng.sample(list(ent.variants), k):
                    answers.append({"text": text, "answer_start": ent_start + off})
            if self.with_variants and len(answers) < 3 and rng.random() < 0.25:
                answers.append(dict(answers[0]))  # a second annotator agreeing (as in CMRC)
            for a in answers:
                assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
            qas.append({
                "id": f"{pid}_QUERY_{j}",
                "question": question,
                "answers": answers,
                "category": ent.category,
                "fact_type": f,
                "question_template": f"{f}#{t_index}",
            })
        return {
            "id": pid,
            "title": subjects[0].text,
            "context": context,
            "qas": qas,
            "entities": sorted(entities, key=lambda e: (e["start"], e["text"])),
        }

    def build(self, pid: str) -> dict[str, Any]:
        for _ in range(_MAX_ATTEMPTS):
            record = self._attempt(pid)
            if record is not None:
                return record
        raise ValueError(
            "could not generate a paragraph with "
            f"paragraph_chars={self.config.paragraph_chars} and "
            f"questions_per_paragraph={self.config.questions_per_paragraph}; "
            "widen the length range or ask for fewer questions"
        )


# ======================================================================================
# Public API
# ======================================================================================


def generate(config: SampleConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    """Generate the ``train``, ``dev`` and ``test`` splits in memory.

    Each split is a list of paragraph records (see the module docstring). The ``test``
    split keeps its answers here so that callers can evaluate; the writers drop them where
    the file format requires. Train questions have one answer; dev/test questions 1-3
    reference answers (variants without a unit, without 「」/《》, ... all at their own
    correct offsets). Each split draws from its own random stream, and no paragraph text
    appears in two splits.
    """
    config = config if config is not None else SampleConfig()
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split, size in config.split_sizes().items():
        rng = random.Random(f"qa-scale-sample:{config.seed}:{split}")
        builder = _ParagraphBuilder(rng, config, with_variants=split != "train")
        records = []
        while len(records) < size:
            record = builder.build(f"{split.upper()}_{len(records)}")
            if record["context"] in seen:  # pragma: no cover - astronomically unlikely
                continue
            seen.add(record["context"])
            records.append(record)
        out[split] = records
    return out


def _hw7_split(records: Sequence[Mapping[str, Any]], with_answers: bool) -> tuple[dict[str, Any], dict[str, str]]:
    questions: list[dict[str, Any]] = []
    paragraphs: list[str] = []
    answers: dict[str, str] = {}
    for p_index, record in enumerate(records):
        paragraphs.append(record["context"])
        for qa in record["qas"]:
            q: dict[str, Any] = {
                "id": len(questions),
                "paragraph_id": p_index,
                "question_text": qa["question"],
            }
            first = qa["answers"][0] if qa.get("answers") else None
            if first is not None:
                answers[str(q["id"])] = first["text"]
            if with_answers:
                if first is None:
                    raise ValueError(f"question {qa.get('id')!r} has no answer")
                q["answer_text"] = first["text"]
                q["answer_start"] = first["answer_start"]
                q["answer_end"] = first["answer_start"] + len(first["text"]) - 1  # inclusive
            questions.append(q)
    return {"questions": questions, "paragraphs": paragraphs}, answers


def write_hw7(splits: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``hw7_<split>.json`` for every split (the HW7 homework format).

    ``{"questions": [{"id", "paragraph_id", "question_text", "answer_text", "answer_start",
    "answer_end"}], "paragraphs": [...]}`` with ``answer_end`` inclusive and question ids
    ``0, 1, 2, ...`` within each split. The ``test`` split is written without the three
    answer keys; its reference answers go to ``hw7_test_answers.json`` as
    ``{"<question id>": "answer text"}``.

    Returns ``{split: path}`` plus ``"test_answers"`` when a test split was written.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for split, records in splits.items():
        is_test = split == "test"
        data, answers = _hw7_split(records, with_answers=not is_test)
        paths[split] = out / f"hw7_{split}.json"
        write_json(paths[split], data)
        if is_test:
            paths["test_answers"] = out / "hw7_test_answers.json"
            write_json(paths["test_answers"], answers)
    return paths


def write_squad(splits: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``squad_<split>.json`` for every split (CMRC 2018 / DRCD layout).

    One article per paragraph, ``{"version": "qa-scale-sample", "data": [{"title", "id",
    "paragraphs": [{"id", "context", "qas": [{"id", "question", "answers": [{"text",
    "answer_start"}]}]}]}]}``; ids follow CMRC (``TRAIN_3``, ``TRAIN_3_QUERY_0``).
    Returns ``{split: path}``.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for split, records in splits.items():
        data = []
        for record in records:
            qas = [
                {
                    "id": qa["id"],
                    "question": qa["question"],
                    "answers": [{"text": a["text"], "answer_start": a["answer_start"]} for a in qa["answers"]],
                }
                for qa in record["qas"]
            ]
            data.append({
                "title": record["title"],
                "id": record["id"],
                "paragraphs": [{"id": record["id"], "context": record["context"], "qas": qas}],
            })
        paths[split] = out / f"squad_{split}.json"
        write_json(paths[split], {"version": _FORMAT_VERSION, "data": data})
    return paths


def write_all(config: SampleConfig | None, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Generate with ``config`` and write every file into ``out_dir``.

    Returns ``{"hw7_train", "hw7_dev", "hw7_test", "hw7_test_answers", "squad_train",
    "squad_dev", "squad_test", "corpus"}`` -> path. ``corpus.txt`` holds every context of
    every split (train, dev, test order), one per line, for a vocabulary or MLM
    pre-training.
    """
    splits = generate(config)
    paths: dict[str, Path] = {}
    paths.update({f"hw7_{k}": v for k, v in write_hw7(splits, out_dir).items()})
    paths.update({f"squad_{k}": v for k, v in write_squad(splits, out_dir).items()})
    corpus = Path(out_dir) / "corpus.txt"
    with atomic_open(corpus) as fh:
        fh.writelines(r["context"] + "\n" for rs in splits.values() for r in rs)
    paths["corpus"] = corpus
    return paths
