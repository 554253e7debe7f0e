from accounts import keys


def test_generated_key_splits_back_into_prefix_and_secret():
    prefix, secret, full_key = keys.generate()
    assert full_key == f"mb_{prefix}_{secret}"
    assert keys.split(full_key) == (prefix, secret)


def test_secret_with_underscores_still_splits():
    assert keys.split("mb_0123456789ab_se_cr_et") == ("0123456789ab", "se_cr_et")


def test_malformed_keys_do_not_split():
    for bad in ["", "mb_", "xx_0123456789ab_secret", "mb_short_secret", "mb_0123456789ab_", "mb_0123456789ab"]:
        assert keys.split(bad) is None, bad


def test_only_the_right_secret_matches_its_hash():
    digest = keys.hash_secret("s3cret")
    assert len(digest) == 64
    assert keys.secret_matches("s3cret", digest)
    assert not keys.secret_matches("s3cret!", digest)
