//! Prints the findings for EXPLAIN JSON files given as arguments (a debugging aid).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path)?;
        let plan = cortex_dbtune::plan::Plan::from_json(&text)?;
        println!("== {path}");
        for n in plan.nodes() {
            println!(
                "   node {} {} total={:?} own={:?} own_cost={:.2}",
                n.path, n.node.node_type, n.total_time_ms, n.own_time_ms, n.own_cost
            );
        }
        for f in cortex_dbtune::plan::analyze(&plan, &Default::default()) {
            println!(
                "  {:<8} {:<22} {:<8} measured={:.3} threshold={} | {}",
                f.severity.to_string(),
                f.rule,
                f.node_path,
                f.measured,
                f.threshold,
                f.suggestion
            );
        }
    }
    Ok(())
}
