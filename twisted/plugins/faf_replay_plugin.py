from twisted.application.service import ServiceMaker

faf_replay = ServiceMaker(
    "faf-replay",
    "faf_replay.server.tap",
    "The live replay server of Forged Alliance Forever",
    "faf-replay",
)
