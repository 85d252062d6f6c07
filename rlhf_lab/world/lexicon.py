"""Word lists for the tiny offline film-review world (see ``rlhf_lab.world.corpus``).

Sentiment words are checked against VADER's ``vader_lexicon.txt``: every positive word has a
positive valence, every negative word a negative one, and every word of the neutral lists is
absent from the lexicon, so that VADER's compound score tracks the grammar's intended sentiment.
"""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    """Split a whitespace-separated list of single words."""
    return tuple(text.split())


def _phrases(text: str) -> tuple[str, ...]:
    """Split a comma-separated list of (possibly multi-word) phrases."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


# --- sentiment words (lexicon valence > 0 / < 0) --------------------------------------------

POSITIVE_ADJECTIVES = _words("""
    superb great awesome outstanding gorgeous marvelous magnificent joyful beautiful splendid
    lovely delightful charming brilliant amazing wonderful perfect excellent remarkable fantastic
    admirable heartfelt fascinating cheerful vibrant triumphant rewarding fabulous brave talented
    strong pleasant impressive honest fun flawless inspired exciting confident adorable wise
    thrilling terrific elegant effective sweet satisfying intelligent graceful clever breathtaking
    playful lively good funny entertaining enjoyable creative innovative inspiring smart sincere
    hilarious convincing thoughtful stunning bold amusing engaging original fresh powerful nice
""")

NEGATIVE_ADJECTIVES = _words("""
    dismal crude pathetic idiotic horrible lousy bad stupid dumb rotten ugly chaotic disappointing
    insulting miserable pitiful shameful fake incompetent poor terrible unpleasant awful forced
    hopeless irritating obnoxious offensive dreadful frustrating painful tired weak worthless lame
    useless annoying dull sluggish depressing embarrassing appalling careless exhausting lazy messy
    ridiculous dreary unimpressive boring confusing trite awkward grim disgusting broken gross
""")

POSITIVE_VERBS = _words("loved enjoyed admired adored appreciated cherished treasured liked")
NEGATIVE_VERBS = _words("hated disliked despised loathed resented regretted")
POSITIVE_PRESENT_VERBS = _words("enjoy like love admire appreciate")
NEGATIVE_PRESENT_VERBS = _words("hate dislike")

POSITIVE_NOUNS = _words("masterpiece triumph delight treat pleasure success joy marvel")
NEGATIVE_NOUNS = _words("disaster failure catastrophe travesty fiasco mess disappointment flop")

POSITIVE_QUALITIES = _words("warmth grace passion care courage talent charm brilliance heart")

POSITIVE_FEELINGS = _words("""
    inspired thrilled happy hopeful delighted amazed satisfied impressed charmed grateful glad
    cheerful pleased entertained
""")
NEGATIVE_FEELINGS = _words("""
    bored annoyed disappointed frustrated confused depressed angry irritated tired miserable
    exhausted disgusted insulted unhappy
""")

POSITIVE_REACTIONS = _words("laugh smile cheer grin")
NEGATIVE_REACTIONS = _words("cry weep scream")

# --- modifiers --------------------------------------------------------------------------------

INTENSIFIERS = _words("""
    very really extremely incredibly absolutely remarkably thoroughly utterly quite deeply
    especially unbelievably totally
""")
DAMPENERS = _words("somewhat slightly")
NEGATIONS = _words("not never hardly")
CONTRAST_CONJUNCTIONS = _words("but although yet")

# --- neutral words (absent from the VADER lexicon) --------------------------------------------

NEUTRAL_ADJECTIVES = _words("""
    quiet slow long short loud dark modern traditional simple plain familiar minimal colorful
    steady deliberate measured understated restrained formal direct spare muted layered dense
    linear episodic brief heavy light busy talky wordy unhurried
""")

CHARACTER_ADJECTIVES = _words("""
    young old tall quiet elderly retired former married teenage unmarried
    local foreign visiting traveling aging talkative bearded
""")

ASPECTS = _phrases("""
    acting, plot, score, soundtrack, direction, cinematography, dialogue, pacing, ending, script,
    screenplay, editing, lighting, casting, writing, story, premise, finale, opening, climax,
    tone, atmosphere, camera work, music, lead performance, production design, sound design,
    photography, framing, narrative, structure, first act, second act, final act, cast,
    costume design, set design, color palette, voice work, makeup, choreography,
    opening scene, final scene, middle hour, theme song, title sequence, runtime
""")

PLURAL_ASPECTS = _phrases("""
    characters, performances, costumes, visuals, effects, sets, scenes, action scenes, songs,
    flashbacks, subplots, locations, landscapes, chase scenes, dance numbers, street scenes,
    side characters, conversations, close ups, long takes, car chases, visual effects
""")

GENRES = _phrases("""
    western, drama, musical, documentary, mystery, fantasy, satire, biopic, melodrama, epic,
    caper, noir, mockumentary, anthology, whodunit, road movie, period piece, family saga,
    courtroom drama, chamber piece, space opera
""")

FIRST_NAMES = _words("""
    Anna Maria Elena Clara Sofia Laura Julia Irene Helen Margaret Ruth Alice Nora Vera Iris
    Olga Marta Lena Eva Rosa Edith Agnes Greta Ingrid Astrid Frida Hannah Leah Miriam Esther
    Naomi Tessa Ada Mabel Opal Hazel Edna Pearl Ines Paula Lucia Carmen Teresa Yuki Mei Priya
    Amara Zara Nadia Samir Omar Karim Tariq Ravi Arjun Kenji Hiro Daniel Thomas Peter Paul
    Henry Arthur Walter Frank Louis Victor Oscar Felix Hugo Otto Bruno Carl Emil Anton Boris
    Ivan Dmitri Pavel Marco Luca Matteo Diego Pablo Mateo Tomas Jonas Lars Nils Sven Erik
    Magnus Leon Simon Isaac Elias Jonah Caleb Silas Abel Amos Rufus Cyril Edgar Harold Ernest
    Beatrice Cora Dora Elsa Flora Gloria Ida Judith Louise Mona Nina Petra Rita Selma Thea
    Wanda Yara Zelda Bianca Chiara Dagny Freya Gemma Hilda Ilse Livia Noor Rhea Sabine Bastian
    Cedric Dorian Emmett Gideon Ivo Jasper Kasimir Lionel Milo Nico Orson Quentin Roland Stellan
    Teodor Ulrich Viggo Wendell Xavier Yusuf Zoltan Anders Basil Conrad Desmond
""")

LAST_NAMES = _words("""
    Adler Baker Becker Brandt Carver Castillo Chen Costa Dalton Dumont Ellis Engel Fischer
    Fontaine Garcia Gray Hale Hartmann Holm Ibarra Ito Jansen Keller Kowalski Lambert Larsen
    Lindqvist Marsh Mendes Moreau Nakamura Novak Okafor Olsen Park Petrov Quinn Reyes Rossi
    Sato Schubert Silva Sorensen Stone Tanaka Thorne Torres Vance Varga Weber Wolff Yamada
    Zeller Abbott Barlow Collins Doyle Fletcher Gallagher Hawkins Jennings Kimura Mercer
    Nolan Pryce Rowe Sinclair Talbot Whitlock Ashford Bellamy Crane Draper Eastwood Finch
    Aalto Bergman Carrington Delacroix Esposito Fairbanks Grimaldi Halvorsen Iwasaki Jovanovic
    Kaminski Lundgren Moretti Nilsson Oyelaran Pellegrini Ramirez Stroud Takahashi Ueda Valdez
    Winslow Yoshida Zamora Albrecht Blackwood Castellano Duarte Eriksen Ferrante Goldberg Huang
    Jakobsen Kessler Lindgren Montoya Nakashima Ortega Pacheco
""")

TITLE_ADJECTIVES = _words("""
    Silver Silent Hidden Last Northern Distant Golden Crimson Quiet Painted Endless Winter
    Summer Autumn Iron Glass Paper Stone Velvet Hollow Midnight Copper Amber Scarlet Open
    Sleeping Wandering Second Seventh Far Long Little Eastern Frozen Salt Blue Green Red Black
    White Violet Tall Narrow Sunken Vanishing Borrowed Rusted Crooked Twin Burning Lunar
    Pale Upper Inner Outer Middle Ninth Ivory Cobalt Emerald Indigo Saffron Marble Cedar Willow
    Pine Tin
""")

TITLE_NOUNS = _words("""
    Harbor River Garden House Road Mountain Island Station Bridge Tower Window Door Letter
    Mirror Lantern Orchard Valley Forest Desert Ocean Shore Field Meadow Machine Clock Signal
    Engine Horizon Compass Voyage Passage Empire Crown Castle Circus Carnival Hotel Diner Motel
    Train Lighthouse Canyon Frontier Season Echo Whisper Feather Anchor Archive Atlas Avenue
    Balcony Cathedral Cellar Chapel Cottage Harvest Highway Ladder Library Marsh Orbit Parade
    Planet Quarry Rooftop Saddle Satellite Theater Tide Tunnel Village Vineyard Wharf Blizzard
    Meridian Atrium Pavilion Greenhouse Boathouse Junction Crossing Reservoir Glacier Summit
    Plateau Estuary Causeway Observatory Foundry Mill Granary Terminal Aqueduct Bell Kite Ferry
    Locket Violin Telegram Postcard Caravan Monsoon Almanac Mosaic
""")

ROLES = _phrases("""
    sailor, pilot, nurse, lawyer, painter, writer, musician, baker, widow, orphan, stranger,
    priest, mayor, sheriff, detective, soldier, teacher, doctor, farmer, fisherman, mechanic,
    student, journalist, reporter, photographer, librarian, chef, waiter, boxer, dancer, singer,
    banker, clerk, tailor, carpenter, astronaut, scientist, professor, inventor, architect,
    engineer, gardener, miner, rancher, cowboy, drifter, neighbor, magician, clown, captain,
    taxi driver, courier, diver, surgeon, pianist, violinist, poet, novelist, editor, archivist,
    beekeeper, shepherd, locksmith, watchmaker, translator, radio host, night guard, bus driver,
    firefighter, lifeguard, postman, janitor, butler, nanny, housekeeper, park ranger, forester,
    geologist, botanist, historian, bookseller, florist, barber, jeweler, potter, sculptor,
    conductor, composer, choreographer, stage manager, projectionist, usher, cartographer,
    glassblower, blacksmith, innkeeper
""")

PLOT_VERBS = _phrases("""
    searches for, finds, builds, repairs, inherits, delivers, carries, paints, writes about,
    buys, sells, opens, studies, collects, discovers, chases, keeps, cleans, tracks, records,
    photographs, translates, borrows, returns, maps, plants, drives, sails, guards, measures,
    counts, catalogs, sketches, packs, unpacks, tunes, rebuilds, wraps, mails,
    sews, carves, polishes, waits for, looks for, sends, receives, trades, lends, weighs, labels,
    feeds, sorts, folds
""")

OBJECTS = _phrases("""
    letter, map, key, suitcase, piano, boat, horse, car, radio, painting, camera, notebook,
    diary, photograph, ring, violin, clock, bicycle, farmhouse, bakery, shop, recipe, manuscript,
    film reel, telescope, compass, lantern, coat, box, envelope, ticket, package, statue,
    necklace, watch, typewriter, record player, cassette tape, dog, cat, parrot, model train,
    sailboat, garden shed, wooden chest, postcard, pocket watch, chess set, quilt, kite,
    umbrella, bell, globe, lamp, mandolin, scarf, hat, kettle, teapot, tent, canoe, tractor,
    van, motorcycle, microscope, fishing rod, birdcage, jigsaw puzzle, photo album, sewing machine
""")

PLACES = _phrases("""
    town, village, city, island, port, valley, farmhouse, apartment, hotel, school, hospital,
    factory, newsroom, studio, theater, ranch, vineyard, lighthouse, train, ship, airport,
    border town, suburb, neighborhood, fishing village, countryside, castle, monastery,
    mining town, diner, motel, library, museum, observatory, station, market, orchard, canyon,
    harbor, mountain town, river town, boarding house, bookshop, ferry, research station,
    radio station, greenhouse, shipyard, bus depot, train yard, lumber mill, cannery, fairground,
    concert hall, opera house, ski lodge, summer camp, boarding school, post office, flower shop,
    bowling alley, laundromat
""")

PLACE_ADJECTIVES = _words("""
    small quiet northern southern coastal rural dusty crowded remote old busy distant foggy
    sleepy windy snowy mountain seaside
""")

DECADES = _phrases("""
    the twenties, the thirties, the forties, the fifties, the sixties, the seventies,
    the eighties, the nineties, the last century, the early years of the century
""")

COMPANIONS = _phrases("""
    my sister, my brother, my father, my mother, my wife, my husband, my roommate, my cousin,
    my uncle, my aunt, my kids, my parents, my grandmother, my grandfather, my neighbor,
    my partner, my coworkers, my whole family, my film class, my son, my daughter, two classmates
""")

VENUES = _phrases("""
    at home, in a small theater, on a long flight, at the cinema, at a drive-in, on television,
    on my laptop, on a train, in a crowded theater, at an outdoor screening, on a cold night
""")

DAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
TIMES_OF_DAY = _words("morning afternoon evening night")

RUNTIMES = _phrases("""
    ninety minutes, two hours, eighty minutes, three hours, one hundred minutes,
    two and a half hours, an hour and a half, one hundred and twenty minutes, seventy minutes
""")

SOURCES = _phrases("""
    book, stage drama, short story, comic book, memoir, radio drama, poem, folk song, fairy tale,
    legend, biography, newspaper article, stage musical, diary, series of letters
""")

MONTHS = _words("""
    January February March April May June July August September October November December
""")

INSTRUMENTS = _words("""
    piano cello violin guitar harp organ trumpet drums accordion flute banjo clarinet saxophone
    synthesizer strings choir
""")

LANGUAGES = _words("""
    French Italian Spanish German Japanese Korean Polish Swedish Danish Portuguese Hungarian Czech
    Greek Turkish Hindi Mandarin Russian Dutch Finnish Norwegian Arabic Persian Icelandic Welsh
""")

ORDINALS = _words("first second third fourth fifth sixth seventh eighth ninth tenth")

SENTIMENT_WORDS: dict[str, tuple[str, ...]] = {
    "positive": POSITIVE_ADJECTIVES
    + POSITIVE_VERBS
    + POSITIVE_PRESENT_VERBS
    + POSITIVE_NOUNS
    + POSITIVE_QUALITIES
    + POSITIVE_FEELINGS
    + POSITIVE_REACTIONS,
    "negative": NEGATIVE_ADJECTIVES
    + NEGATIVE_VERBS
    + NEGATIVE_PRESENT_VERBS
    + NEGATIVE_NOUNS
    + NEGATIVE_FEELINGS
    + NEGATIVE_REACTIONS,
}

NEUTRAL_WORD_LISTS: dict[str, tuple[str, ...]] = {
    "neutral_adjectives": NEUTRAL_ADJECTIVES,
    "character_adjectives": CHARACTER_ADJECTIVES,
    "aspects": ASPECTS,
    "plural_aspects": PLURAL_ASPECTS,
    "genres": GENRES,
    "first_names": FIRST_NAMES,
    "last_names": LAST_NAMES,
    "title_adjectives": TITLE_ADJECTIVES,
    "title_nouns": TITLE_NOUNS,
    "roles": ROLES,
    "plot_verbs": PLOT_VERBS,
    "objects": OBJECTS,
    "places": PLACES,
    "place_adjectives": PLACE_ADJECTIVES,
    "decades": DECADES,
    "companions": COMPANIONS,
    "venues": VENUES,
    "runtimes": RUNTIMES,
    "sources": SOURCES,
    "months": MONTHS,
    "instruments": INSTRUMENTS,
    "languages": LANGUAGES,
}
