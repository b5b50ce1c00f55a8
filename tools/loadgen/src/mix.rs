//! What a shopper does, and how often.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `GET /products` with paging and, half the time, a category filter.
    Browse,
    GetProduct,
    Register,
    Login,
    /// `POST /orders` with 1-3 items and an Idempotency-Key.
    CreateOrder,
    /// The polls of `GET /orders/{id}` until an order is terminal.
    GetOrder,
    CancelOrder,
    /// Not a request: from an order's due time until it was seen CONFIRMED.
    OrderConfirmed,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Browse => "browse",
            Op::GetProduct => "get-product",
            Op::Register => "register",
            Op::Login => "login",
            Op::CreateOrder => "create-order",
            Op::GetOrder => "get-order",
            Op::CancelOrder => "cancel-order",
            Op::OrderConfirmed => "order-confirmed",
        }
    }
}

/// Operations with integer weights; `pick` maps a uniform draw to one.
#[derive(Debug, Clone)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    pub fn new(weights: Vec<(Op, u32)>) -> Mix {
        let total = weights.iter().map(|(_, w)| w).sum();
        assert!(total > 0, "a mix needs a positive weight");
        Mix { weights, total }
    }

    /// A shop's traffic: mostly catalogue reads, one visit in five orders.
    /// Polls and cancels follow from the orders, they are not drawn.
    pub fn shop() -> Mix {
        Mix::new(vec![
            (Op::Browse, 30),
            (Op::GetProduct, 45),
            (Op::CreateOrder, 20),
            (Op::Login, 3),
            (Op::Register, 2),
        ])
    }

    pub fn only(op: Op) -> Mix {
        Mix::new(vec![(op, 1)])
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// `draw` in `0..total()`.
    pub fn pick(&self, draw: u32) -> Op {
        let mut left = draw % self.total;
        for (op, weight) in &self.weights {
            if left < *weight {
                return *op;
            }
            left -= weight;
        }
        unreachable!("draw is reduced modulo the total weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_weights_exactly_over_one_cycle() {
        let mix = Mix::shop();
        assert_eq!(mix.total(), 100);
        let mut counts = std::collections::BTreeMap::new();
        for draw in 0..mix.total() {
            *counts.entry(mix.pick(draw)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Op::Browse], 30);
        assert_eq!(counts[&Op::GetProduct], 45);
        assert_eq!(counts[&Op::CreateOrder], 20);
        assert_eq!(counts[&Op::Login], 3);
        assert_eq!(counts[&Op::Register], 2);
        assert!(!counts.contains_key(&Op::GetOrder));
    }

    #[test]
    fn a_single_operation_mix_always_picks_it() {
        let mix = Mix::only(Op::GetProduct);
        assert!((0..50).all(|d| mix.pick(d) == Op::GetProduct));
    }
}
