"""A run's validation rows become a table and a plot that name the attacks."""

from training.reports.learning_curve import main


def test_the_curve_is_rendered_with_attack_names(tmp_path):
    (tmp_path / "validation.csv").write_text(
        "wall_s,epoch,step,val_clean_agreement,val_attack0_fooling,val_attack0_undefended,"
        "val_mean_fooling\n"
        "1.0,0,0,100.0,100.0,100.0,100.0\n"
        "9.0,1,256,98.5,61.25,100.0,61.25\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text("validation:\n  attacks:\n    - {name: PGD-10 16/255, kind: pgd}\n")
    main([str(tmp_path), "--config", str(config)])
    table = (tmp_path / "curve.md").read_text()
    assert "| step | clean agreement | PGD-10 16/255 fooling | mean fooling |" in table
    assert "| 256 | 98.5 | 61.25 | 61.25 |" in table
    assert "Without the purifier: PGD-10 16/255 100.0% fooling." in table
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_validated_by_distances_gets_its_curve_too(tmp_path):
    """NRP's validation has no agreement column: the table and the figure still come."""
    (tmp_path / "validation.csv").write_text(
        "wall_s,epoch,step,val_adv_feat,val_adv_psnr,val_clean_feat,val_clean_psnr\n"
        "1.0,1,256,0.2395,31.33,0.2189,31.79\n"
        "2.0,2,512,0.2411,30.65,0.2055,31.28\n"
    )
    main([str(tmp_path)])
    assert "| 512 | 0.2411 | 30.65 | 0.2055 | 31.28 |" in (tmp_path / "curve.md").read_text()
    assert (tmp_path / "curve.png").stat().st_size > 10_000
