"""Entities of the sample paragraphs: name tables, one generator per entity kind, and the pool
that keeps the entities of one paragraph distinct (none contains another)."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Entity:
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


def _plain(text: str, category: str, kind: str, variants: Sequence[tuple[int, str]] = ()) -> Entity:
    return Entity(text, category, kind, (0, text), tuple(variants))


def _tenths(rng: random.Random, lo: int, hi: int) -> str:
    """A decimal with one digit after the point, from lo/10 to hi/10 (no float formatting)."""
    n = rng.randint(lo, hi)
    return f"{n // 10}.{n % 10}"


def _gen_person(rng: random.Random) -> str:
    surname = rng.choice(_COMPOUND_SURNAMES) if rng.random() < 0.06 else rng.choice(_SURNAMES)
    given = "".join(rng.choice(_GIVEN) for _ in range(1 if rng.random() < 0.35 else 2))
    return surname + given


def _gen_city(rng: random.Random) -> Entity:
    if rng.random() < 0.35:
        core = rng.choice(_REAL_CITIES)
    else:
        core = rng.choice(_CITY_HEAD) + rng.choice(_CITY_TAIL)
    return _plain(core + "市", "city", "city", [(0, core)])


def _gen_province(rng: random.Random) -> Entity:
    if rng.random() < 0.8:
        core = rng.choice(_PROVINCES)
    else:
        core = rng.choice(_CITY_TAIL) + rng.choice(_CITY_HEAD)
    return _plain(core + "省", "province", "province", [(0, core)])


def _gen_year(rng: random.Random, lo: int, hi: int, kind: str) -> Entity:
    y = str(rng.randint(lo, hi))
    return _plain(y + "年", "year", kind, [(0, y)])


def _gen_year_old(rng: random.Random) -> Entity:
    if rng.random() < 0.4:
        y = str(rng.randint(200, 999))
        return _plain(f"公元{y}年", "year", "year_old", [(2, y + "年")])
    return _gen_year(rng, 1100, 1900, "year_old")


def _gen_date(rng: random.Random, lo: int = 1950, hi: int = 2023) -> Entity:
    y, m, d = rng.randint(lo, hi), rng.randint(1, 12), rng.randint(1, 28)
    return _plain(f"{y}年{m}月{d}日", "date", "date")


def _ascii_abbr(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(2, 4)))


def _gen_company(rng: random.Random) -> Entity:
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


def _gen_university(rng: random.Random) -> Entity:
    kind = rng.choice(("大学", "理工大学", "师范大学", "科技大学", "医科大学"))
    core = rng.choice(_ORG_CORES) if rng.random() < 0.6 else rng.choice(_CITY_HEAD) + rng.choice(_CITY_TAIL)
    return _plain(core + kind, "org", "university")


def _gen_institute(rng: random.Random) -> Entity:
    return _plain(f"{rng.choice(_ORG_CORES)}{rng.choice(_FIELDS)}研究所", "org", "institute")


def _gen_association(rng: random.Random) -> Entity:
    return _plain(f"{rng.choice(_ORG_CORES)}{rng.choice(_ASSOC_FIELDS)}协会", "org", "association")


def _gen_book(rng: random.Random) -> Entity:
    if rng.random() < 0.12:
        inner = rng.choice(_ASCII_WORDS) + rng.choice(_BOOK_TAIL)
    else:
        inner = rng.choice(_BOOK_HEAD) + rng.choice(_BOOK_TAIL)
    return _plain(f"《{inner}》", "book", "book", [(1, inner)])


def _gen_award(rng: random.Random) -> Entity:
    inner = rng.choice(_AWARD_HEAD) + rng.choice(_AWARD_TAIL) + "奖"
    text = f"「{inner}」"
    return Entity(text, "award", "award", (1, inner), ((0, text),))


def _gen_product(rng: random.Random) -> Entity:
    form = rng.randrange(3)
    if form == 0:
        text = f"{_ascii_abbr(rng)}-{rng.randint(1, 9) * 100}型{rng.choice(_PRODUCT_THINGS)}"
    elif form == 1:
        text = f"{rng.choice(_ORG_CORES)}{_tenths(rng, 10, 99)}{rng.choice(_PRODUCT_SYSTEMS)}"
    else:
        core = rng.choice(_BOOK_HEAD)
        text = f"「{core}」系列{rng.choice(_PRODUCT_SERIES)}"
    return _plain(text, "product", "product")


def _gen_landmark(rng: random.Random) -> Entity:
    core = rng.choice(_MOUNTAIN_HEAD)
    return _plain(core + rng.choice(("山", "峰", "岭")), "landmark", "landmark")


def _unit(kind: str, category: str, number: str, unit: str, drop: int | None = None) -> Entity:
    """A number with a unit; ``drop`` characters of the unit may be left out in a variant."""
    text = number + unit
    keep = len(text) - (len(unit) if drop is None else drop)
    return _plain(text, category, kind, [(0, text[:keep])])


def _gen_population(rng: random.Random) -> Entity:
    num = _tenths(rng, 100, 999) if rng.random() < 0.3 else str(rng.randint(20, 2400))
    return _unit("population", "population", num, "万人", drop=1)


def _gen_gdp(rng: random.Random) -> Entity:
    return _unit("gdp", "money", _tenths(rng, 5000, 300000), "亿元", drop=1)


def _gen_revenue(rng: random.Random) -> Entity:
    if rng.random() < 0.7:
        return _unit("revenue", "money", _tenths(rng, 10, 9999), "亿元", drop=1)
    return _unit("revenue", "money", str(rng.randint(120, 9800)), "万元", drop=1)


def _gen_percent(rng: random.Random) -> Entity:
    return _unit("percent", "percent", _tenths(rng, 10, 650), "%")


GENERATORS: dict[str, Callable[[random.Random], Entity]] = {
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

KIND_CATEGORY: dict[str, str] = {k: g(random.Random(0)).category for k, g in GENERATORS.items()}

#: Slot kinds that may point at another subject of the paragraph instead of a new entity.
REUSE_FROM = {"person": "person", "city": "city", "employer": "org"}


class EntityPool:
    """The entities of one paragraph: no two distinct entities contain one another."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.texts: list[str] = []

    def _conflicts(self, text: str) -> bool:
        return any(text in t or t in text for t in self.texts)

    def new(self, kind: str, years: tuple[int, int] | None = None) -> Entity:
        """A fresh entity of ``kind``; ``years`` bounds the year of year/date kinds."""
        gen = GENERATORS[kind]
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
