"""The sentence templates of the sample paragraphs (data tables): fact sentences by subject,
their questions, fillers and distractors, and the check that they fit together."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Iterable

from .entities import GENERATORS


@dataclass(frozen=True)
class SentenceGroup:
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


def group(name: str, subject: str, slots: str, phrasings: Iterable[str], facts: str, only: str = "") -> SentenceGroup:
    pairs = tuple(tuple(p.split(":")) for p in slots.split())
    return SentenceGroup(name, subject, pairs, tuple(phrasings), tuple(facts.split()), tuple(only.split()))  # type: ignore[arg-type]


GROUPS: tuple[SentenceGroup, ...] = (
    # ---------------------------------------------------------------- people
    group("birth", "P", "birth_year:year_birth birth_city:city", (
        "{P}于{birth_year}出生在{birth_city}。",
        "{birth_year}，{P}出生在{birth_city}的一个普通家庭。",
        "{P}{birth_year}生于{birth_city}，童年在那里度过。",
    ), "birth_year birth_city"),
    group("education", "P", "school:university major:major", (
        "{P}毕业于{school}{major}专业。",
        "{P}曾就读于{school}，主修{major}。",
        "中学毕业后，{P}考入{school}，攻读{major}专业。",
    ), "school major"),
    group("job", "P", "join_year:year_recent employer:employer position:position", (
        "{join_year}，{P}加入{employer}，担任{position}。",
        "{P}自{join_year}起在{employer}工作，现任{position}。",
        "{P}于{join_year}进入{employer}，此后一直担任{position}一职。",
    ), "join_year employer position"),
    group("book", "P", "book_year:year_recent book:book book_sales:copies", (
        "{book_year}，{P}出版了代表作{book}，销量超过{book_sales}。",
        "{P}的代表作{book}于{book_year}出版，累计售出{book_sales}。",
    ), "book_year book book_sales"),
    group("award", "P", "award_date:date award:award", (
        "{award_date}，{P}凭借出色的工作获得了{award}。",
        "{P}曾于{award_date}荣获{award}，这是对其多年努力的肯定。",
    ), "award_date award"),
    group("mentor", "P", "mentor:person", (
        "{P}的导师是著名学者{mentor}。",
        "求学期间，{P}师从{mentor}，深受其影响。",
    ), "mentor"),
    group("origin", "P", "origin_province:province", (
        "{P}祖籍{origin_province}，家中世代务农。",
        "{P}的祖籍是{origin_province}。",
    ), "origin_province"),
    group("move", "P", "move_year:year_recent move_city:city", (
        "{move_year}，{P}举家迁往{move_city}定居。",
        "{P}在{move_year}迁往{move_city}，从此在那里生活。",
    ), "move_year move_city"),
    # ---------------------------------------------------------------- cities
    group("location", "C", "province:province", (
        "{C}位于{province}东部，是该省的重要城市。",
        "{C}隶属于{province}，地处平原地带。",
        "{C}地处{province}西南部，山水环绕。",
    ), "province"),
    group("population", "C", "pop_year:year_recent population:population", (
        "截至{pop_year}，{C}的常住人口约为{population}。",
        "{C}的常住人口约{population}（{pop_year}统计）。",
    ), "population"),
    group("area", "C", "area:area", (
        "{C}的总面积为{area}。",
        "{C}辖区总面积约{area}，下辖多个区县。",
    ), "area"),
    group("founding", "C", "city_founded:year_old", (
        "{C}始建于{city_founded}，历史悠久。",
        "早在{city_founded}，{C}就已经建城。",
    ), "city_founded"),
    group("bridges", "C", "bridges:count_zuo", (
        "{C}境内河网密布，共有大小桥梁{bridges}。",
        "{C}共建有{bridges}桥梁，素有「桥城」之称。",
    ), "bridges"),
    group("distance", "C", "dist_city:city distance:distance", (
        "{C}距离{dist_city}约{distance}，驾车往来十分方便。",
        "从{C}到{dist_city}的公路里程约为{distance}。",
    ), "dist_city distance"),
    group("gdp", "C", "gdp_year:year_recent gdp:gdp", (
        "{gdp_year}，{C}的地区生产总值达到{gdp}。",
        "{C}在{gdp_year}实现地区生产总值{gdp}，增速位居全省前列。",
    ), "gdp_year gdp"),
    group("mayor", "C", "mayor:person", (
        "{C}现任市长为{mayor}。",
        "现任{C}市长{mayor}多次表示要大力发展旅游业。",
    ), "mayor"),
    group("mountain", "C", "mountain:landmark height:height", (
        "{C}以{mountain}闻名，其主峰海拔{height}。",
        "{C}境内的{mountain}海拔{height}，是著名的风景区。",
    ), "mountain height"),
    # ---------------------------------------------------------------- organisations
    group("org_founding", "O", "org_founded:date founder:person", (
        "{O}由{founder}于{org_founded}创立。",
        "{org_founded}，{founder}创办了{O}。",
        "{O}成立于{org_founded}，创始人是{founder}。",
    ), "org_founded founder"),
    group("hq", "O", "hq_city:city", (
        "{O}的总部设在{hq_city}。",
        "{O}总部位于{hq_city}，并在多地设有办事处。",
    ), "hq_city"),
    group("staff", "O", "staff:count_ming", (
        "{O}目前拥有员工{staff}。",
        "{O}现有{staff}员工，其中一半以上从事研发工作。",
    ), "staff", only="company institute association"),
    group("students", "O", "students:count_ming", (
        "{O}目前有在校学生{students}。",
        "{O}现有{students}在校学生，设有多个学院。",
    ), "students", only="university"),
    group("revenue", "O", "rev_year:year_recent revenue:revenue", (
        "{rev_year}，{O}的营业收入为{revenue}。",
        "{O}在{rev_year}实现营业收入{revenue}，同比增长明显。",
    ), "rev_year revenue", only="company"),
    group("abbr", "O", "abbr:abbr", (
        "{O}的英文简称为{abbr}。",
        "{O}（英文简称{abbr}）在业内享有盛誉。",
    ), "abbr"),
    group("share", "O", "share:percent", (
        "{O}的市场份额约为{share}。",
        "目前，{O}占据了约{share}的市场份额。",
    ), "share", only="company"),
    group("product", "O", "product:product", (
        "{O}推出的主要产品{product}广受好评。",
        "{O}的主要产品是{product}。",
    ), "product", only="company institute"),
    group("leader", "O", "leader:person", (
        "{O}的现任负责人是{leader}。",
        "目前，{leader}担任{O}的负责人。",
    ), "leader"),
    group("branches", "O", "branches:count_jia", (
        "{O}在全国设有{branches}分支机构。",
        "经过多年发展，{O}已在各地开设{branches}分支机构。",
    ), "branches", only="company association"),
)

#: Question templates per fact type. ``{P}``/``{C}``/``{O}`` is the subject; other fields
#: are slots of the same sentence group (never the answer slot itself).
QUESTIONS: dict[str, tuple[str, ...]] = {
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
FACT_TYPES: tuple[str, ...] = tuple(QUESTIONS)

#: Answer categories (what a type-guessing baseline would match on).
CATEGORIES: tuple[str, ...] = (
    "person", "city", "province", "year", "date", "org", "book", "award", "position", "major",
    "abbreviation", "landmark", "product", "population", "area", "distance", "money", "height",
    "copies", "percent", "count",
)

# Sentences that add no entity: history, description, atmosphere.
FILLERS: tuple[str, ...] = (
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
DISTRACTORS: tuple[tuple[str, str], ...] = (
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

ORG_KINDS = ("company", "company", "university", "institute", "association")
SUBJECT_KIND = {"P": "person", "C": "city", "O": "org"}


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def check_templates() -> None:
    """Raise AssertionError when a template refers to a slot its group does not have."""
    seen: set[str] = set()
    for group in GROUPS:
        slots = {group.subject} | {s for s, _ in group.slots}
        for kind in (k for _, k in group.slots):
            assert kind in GENERATORS, (group.name, kind)
        for phr in group.phrasings:
            fields = template_fields(phr)
            assert sorted(fields) == sorted(slots), (group.name, phr)
        for fact in group.facts:
            assert fact in QUESTIONS and fact not in seen, fact
            seen.add(fact)
            for q in QUESTIONS[fact]:
                fields = set(template_fields(q))
                assert fields, q  # names the subject or another entity of the sentence
                assert fields <= slots - {fact}, q
    assert seen == set(QUESTIONS), set(QUESTIONS) ^ seen
    for kind, tmpl in DISTRACTORS:
        assert kind in GENERATORS and template_fields(tmpl) == ["X"], tmpl
