-- The tables of FAF's database (faf_lobby) that faf-replay reads and writes,
-- with the column names and types of FAForever/db after its migrations up to
-- V146. Only the columns the server touches are here, and no foreign keys, so
-- that the fixtures can hold the broken rows the server must survive.
-- One difference on purpose: game_player_stats.team is NOT NULL in FAF's
-- schema, but old rows and the protocol allow a missing team, so it is
-- nullable here to test that case.

CREATE TABLE login (
  id    MEDIUMINT(8) UNSIGNED NOT NULL AUTO_INCREMENT,
  login VARCHAR(20) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY unique_login (login)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE game_featuredMods (
  id      TINYINT(3) UNSIGNED NOT NULL,
  gamemod VARCHAR(50) NULL DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY mod_name_idx (gamemod)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE map_version (
  id          MEDIUMINT(8) UNSIGNED NOT NULL AUTO_INCREMENT,
  folder_name VARCHAR(200) NOT NULL,
  filename    VARCHAR(200) AS (CONCAT('maps/', folder_name, '.zip')) VIRTUAL,
  PRIMARY KEY (id),
  UNIQUE KEY folder_name (folder_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE game_stats (
  id               INT(10) UNSIGNED NOT NULL,
  startTime        TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  endTime          TIMESTAMP NULL DEFAULT NULL,
  replay_ticks     INT(10) UNSIGNED NULL DEFAULT NULL,
  gameType         ENUM('DEMORALIZATION','DOMINATION','ERADICATION','SANDBOX','DECAPITATION') NOT NULL,
  gameMod          TINYINT(3) UNSIGNED NOT NULL,
  host             MEDIUMINT(8) UNSIGNED NOT NULL,
  mapId            MEDIUMINT(8) UNSIGNED NULL DEFAULT NULL,
  gameName         VARCHAR(128) NOT NULL,
  replay_available TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE game_player_stats (
  id       BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  gameId   INT(10) UNSIGNED NOT NULL,
  playerId MEDIUMINT(8) UNSIGNED NOT NULL,
  AI       TINYINT(1) NOT NULL,
  team     TINYINT(3) NULL,
  PRIMARY KEY (id),
  KEY gameIdIdx (gameId)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE updates_faf (
  id       SMALLINT(5) UNSIGNED NOT NULL AUTO_INCREMENT,
  filename VARCHAR(45) NOT NULL,
  path     VARCHAR(45) NOT NULL,
  UNIQUE KEY id (id)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

CREATE TABLE updates_faf_files (
  id       INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  fileId   SMALLINT(5) UNSIGNED NOT NULL,
  version  INT(11) NOT NULL,
  name     VARCHAR(45) NOT NULL,
  md5      VARCHAR(45) NOT NULL,
  obselete TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  KEY fileId (fileId)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

-- A second mod with update tables, and one name ("my-mod") that needs quoting.
CREATE TABLE updates_coop LIKE updates_faf;
CREATE TABLE updates_coop_files LIKE updates_faf_files;
CREATE TABLE `updates_my-mod` LIKE updates_faf;
CREATE TABLE `updates_my-mod_files` LIKE updates_faf_files;
