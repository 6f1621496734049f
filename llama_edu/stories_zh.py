"""A seeded generator of short Chinese stories, from a grammar of their own (lessons 01, 10).

Not a translation of `llama_edu.stories`: Chinese names (surname + given name), places (a
town south of the Yangtze, a ferry on the Yellow River, a yurt on the grassland),
festivals and their food, market days, apprentices and their masters, and a closing
chengyu (成语) with its meaning. The sentences use Chinese patterns: measure words
(一只狐狸, 一把油纸伞), 把 sentences, 了/着 aspect, and full-width punctuation. Numbers
are written in digits, so the tokenizer's split digits apply to them too. The same seed
always gives the same stories.

    >>> story_text_zh(1, seed=3)[:9]
    '不久以前，在海边的'
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ZH_SURNAMES = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马",
                "朱", "胡", "林", "郭", "何", "高", "罗"]
_ZH_GIVEN = ["小明", "小红", "小虎", "小燕", "阿福", "阿花", "大山", "春生", "秋月", "冬冬",
             "晓雨", "子涵", "思远", "嘉怡", "浩然", "一鸣", "若溪", "铁柱", "玉兰", "石头"]
_ZH_ELDERS = ["老爷爷", "老奶奶", "村长", "老木匠", "卖茶的阿婆", "老渔夫", "教书先生",
              "铁匠师傅"]
# (noun, measure word): 一只狐狸, 一位老师
_ZH_KINDS = [("狐狸", "只"), ("兔子", "只"), ("熊猫", "只"), ("小猴", "只"), ("喜鹊", "只"),
             ("黄牛", "头"), ("小马", "匹"), ("鲤鱼", "条"), ("少年", "个"), ("姑娘", "个"),
             ("书生", "个"), ("厨师", "位"), ("画家", "位"), ("郎中", "位"), ("船夫", "个"),
             ("农夫", "个"), ("木匠", "个"), ("小和尚", "个")]
_ZH_TRAITS = ["勇敢", "害羞", "好奇", "聪明", "急躁", "善良", "懒惰", "开朗", "细心",
              "粗心", "耐心", "骄傲", "安静", "倔强", "健忘", "诚实", "胆小", "大方"]
_ZH_PLACES = ["江南的一个小镇", "山脚下的一个村庄", "黄河边的一个渡口", "一片竹林深处",
              "长城脚下的小村", "西湖边的一座茶楼", "草原上的一座蒙古包", "海边的一个渔村",
              "一条热闹的老街", "一座古老的寺庙旁", "大山里的一所小学", "一个种满荷花的池塘边"]
# (thing, measure word)
_ZH_THINGS = [("风筝", "只"), ("灯笼", "盏"), ("毛笔", "支"), ("玉佩", "块"), ("铜钥匙", "把"),
              ("旧地图", "张"), ("竹篮", "个"), ("小木船", "条"), ("二胡", "把"), ("油纸伞", "把"),
              ("茶壶", "把"), ("算盘", "个"), ("红围巾", "条"), ("铜铃", "只"), ("信", "封"),
              ("种子", "包")]
_ZH_SEASONS = ["春天，桃花开满了山坡。", "夏天的午后，知了叫个不停。", "秋风一吹，稻田一片金黄。",
               "冬天到了，河面结了一层薄冰。", "清晨下起了毛毛细雨。", "那天晚上，月亮又大又圆。"]
_ZH_FEELINGS = ["高兴", "着急", "吃惊", "累", "得意", "难过", "兴奋", "平静", "糊涂", "感激"]
_ZH_FESTIVALS = [("春节", "饺子"), ("中秋节", "月饼"), ("端午节", "粽子"), ("元宵节", "汤圆")]
# (idiom, the lesson it teaches, used in a closing sentence)
_ZH_IDIOMS = [("熟能生巧", "只要天天练习，就能做得又快又好"),
              ("亡羊补牢", "出了错赶紧补救，还不算晚"),
              ("半途而废", "做事不能做到一半就放弃"),
              ("画蛇添足", "多此一举，反而坏了事"),
              ("守株待兔", "不能只等好运自己送上门"),
              ("一举两得", "做一件事，得到两样好处"),
              ("井底之蛙", "要多出去走走，看看外面的世界"),
              ("齐心协力", "大家一起用力，难事也能办成")]


@dataclass
class _ZhCharacter:
    name: str
    kind: str
    measure: str
    trait: str

    @property
    def intro(self) -> str:              # "一只害羞的狐狸，名叫王小明"
        return f"一{self.measure}{self.trait}的{self.kind}，名叫{self.name}"


def _zh_character(rng: random.Random, avoid: str = "") -> _ZhCharacter:
    while True:
        name = rng.choice(_ZH_SURNAMES) + rng.choice(_ZH_GIVEN)
        if name != avoid:
            break
    kind, measure = rng.choice(_ZH_KINDS)
    return _ZhCharacter(name, kind, measure, rng.choice(_ZH_TRAITS))


def _zh_lost(rng, hero, friend, thing, measure):
    spot = rng.choice(["床底下", "书架后面", "草丛里", "井边的石头旁", "米缸里", "屋顶上"])
    tries = rng.randint(2, 9)
    return [f"有一天，{hero.name}把{thing}弄丢了。",
            f"{hero.name}前前后后找了{tries}遍，还是没有找到。",
            f"“你看见我的{thing}了吗？”{hero.name}问{friend.name}。",
            f"“没看见，”{friend.name}说，“不过我可以帮你一起找。”",
            f"两个人找了很久，最后在{spot}找到了那{measure}{thing}。",
            f"{hero.name}又{rng.choice(_ZH_FEELINGS)}又感激，连声向{friend.name}道谢。"]


def _zh_market(rng, hero, friend, thing, measure):
    coins = rng.randint(3, 60)
    price = rng.randint(1, coins)
    goods = rng.choice(["一斤青菜", "两个包子", "一篮鸡蛋", "一包糖果", "一块豆腐", "三个苹果"])
    load = rng.choice(["一大捆柴火", "一袋大米", "一筐白菜", "两桶井水"])
    return ["逢五逢十，镇上都要赶集。",
            f"这天一早，{hero.name}揣着{coins}个铜板去了集市。",
            "集市上人来人往，叫卖声此起彼伏。",
            f"{hero.name}花了{price}个铜板，买了{goods}。",
            f"回家的路上，{hero.name}碰见了{friend.intro}。",
            f"{friend.name}正背着{load}，走得满头大汗。",
            f"{hero.name}帮{friend.name}扛了一段路，两个人说说笑笑，很快就到了家门口。"]


def _zh_contest(rng, hero, friend, thing, measure):
    event = rng.choice(["赛龙舟", "放风筝比赛", "包饺子比赛", "写毛笔字比赛", "猜灯谜", "下象棋"])
    score, other = rng.randint(10, 99), rng.randint(10, 99)
    winner, loser = (hero, friend) if score >= other else (friend, hero)
    return [f"村里要举行{event}。",
            f"{hero.name}每天傍晚都拿着{thing}练习。",
            f"{friend.name}也在偷偷地准备。",
            f"比赛那天，{hero.name}得了{score}分，{friend.name}得了{other}分。",
            f"{winner.name}赢了，{loser.name}第一个跑过去向{winner.name}道喜。",
            f"“明年我一定赢你！”{loser.name}笑着说，大家也都笑了。"]


def _zh_apprentice(rng, hero, friend, thing, measure):
    skill = rng.choice(["编竹篮", "写毛笔字", "做豆腐", "拉二胡", "打算盘", "包粽子"])
    elder = rng.choice(_ZH_ELDERS)
    days = rng.randint(3, 90)
    return [f"{hero.name}想跟{elder}学{skill}。",
            f"头几天，{hero.name}总是做不好，急得直跺脚。",
            f"{elder}说：“别急，慢慢来。”",
            f"{hero.name}每天天不亮就起来练，一练就是{days}天。",
            f"后来，{hero.name}{skill}又快又好，连{friend.name}都看呆了。"]


def _zh_river(rng, hero, friend, thing, measure):
    hour = rng.randint(1, 12)
    return [f"{hour}点钟的时候，天上忽然下起了大雨。",
            f"{friend.name}被困在了河对岸，怎么也回不来。",
            f"{hero.name}平时有些{hero.trait}，可这一次没有犹豫。",
            f"{hero.name}拿着{thing}，冒着大雨走过了那座摇摇晃晃的木桥。",
            f"{friend.name}浑身湿透，却平平安安。",
            "第二天，雨过天晴，河水又变得安安静静。"]


def _zh_festival(rng, hero, friend, thing, measure):
    festival, food = rng.choice(_ZH_FESTIVALS)
    count = rng.randint(4, 48)
    return [f"{festival}快到了，家家户户都忙着准备。",
            f"{hero.name}和{friend.name}一起做了{count}个{food}。",
            f"他们还在门口挂了一{measure}{thing}，看上去喜气洋洋。",
            f"到了晚上，大家围坐在一起，一边吃{food}，一边讲故事。",
            f"{hero.name}觉得，这是最{rng.choice(['热闹', '开心', '难忘'])}的一个{festival}。"]


_ZH_PLOTS = [_zh_lost, _zh_market, _zh_contest, _zh_apprentice, _zh_river, _zh_festival]


@dataclass(frozen=True)
class StoryZh:
    """A Chinese story and the facts it states, for questions about it (lesson 13's data)."""

    text: str
    hero: str          # "王小明"
    kind: str          # "狐狸"
    described: str     # "一只害羞的狐狸"
    place: str         # "江南的一个小镇"
    thing: str         # "风筝"


def make_story_zh(rng: random.Random) -> str:
    """One short Chinese story: an opening, a plot drawn from six, an idiom to close."""
    return tell_story_zh(rng).text


def tell_story_zh(rng: random.Random) -> StoryZh:
    """`make_story_zh`'s story with its facts (the same text for the same generator state)."""
    hero = _zh_character(rng)
    friend = _zh_character(rng, avoid=hero.name)
    thing, measure = rng.choice(_ZH_THINGS)
    place = rng.choice(_ZH_PLACES)
    opening = rng.choice(["从前", "很久很久以前", "不久以前", "去年春天", "有一年"])
    lines = [f"{opening}，在{place}，住着{hero.intro}。", rng.choice(_ZH_SEASONS)]
    lines += rng.choice(_ZH_PLOTS)(rng, hero, friend, thing, measure)
    idiom, moral = rng.choice(_ZH_IDIOMS)
    lines.append(rng.choice([f"这正应了那句话：{idiom}。",
                             f"后来人们常说“{idiom}”，意思是{moral}。",
                             "故事讲完了。", f"{hero.name}一直记得那一天。"]))
    described = f"一{hero.measure}{hero.trait}的{hero.kind}"
    return StoryZh("".join(lines), hero.name, hero.kind, described, place, thing)


def story_text_zh(n_stories: int = 1500, seed: int = 0) -> str:
    """`n_stories` Chinese stories, separated by blank lines, seeded with `seed`."""
    if n_stories < 1:
        raise ValueError(f"n_stories must be at least 1, got {n_stories}")
    rng = random.Random(seed)
    return "\n\n".join(make_story_zh(rng) for _ in range(n_stories))
